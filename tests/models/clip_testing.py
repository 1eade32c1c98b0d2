"""Tiny transformers CLIP text encoders, CLIP models and BPE vocabularies built on the spot (no downloads)."""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel

CORPUS = [
    "a photograph of an astronaut riding a horse on the moon, highly detailed, 4k",
    "the quick brown fox jumps over the lazy dog; it's a beautiful day!",
    "oil painting of a lighthouse at sunset, waves crashing against the rocks",
    "a cat sitting on a windowsill, watching the rain fall outside (cinematic lighting)",
    "cyberpunk city street at night with neon signs & flying cars - trending on artstation",
    "two dogs playing fetch in a park during autumn, leaves falling slowly",
    "portrait of a woman with red hair, studio lighting, 85mm lens, f/1.8",
    "timelapse of clouds moving over snowy mountains; they're drifting east",
    "a robot chef cooking pancakes in a kitchen, 3d render, octane, unreal engine 5",
    "we'll see the fireworks over the river tonight, won't we? yes we'd love to",
    "an underwater scene with colourful fish, coral reefs and sunlight rays",
    "a teddy bear skateboarding in times square, video, slow motion 120fps",
]

# A CLIPTextModel small enough for conversion and pipeline tests.
TINY_TEXT_ENCODER = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with weights drawn (from torch's global generator) wide enough that every part matters."""
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            scale = 0.5 if "embedding" in name else 0.15
            param.copy_(centre + scale * torch.randn_like(param))
    return model


def save_text_encoder(folder: Path, seed: int = 0, **config) -> CLIPTextModel:
    """A random CLIPTextModel saved to `folder`; weights drawn wide enough that every part matters."""
    torch.manual_seed(seed)
    model = randomise(CLIPTextModel(CLIPTextConfig(**config)))
    model.save_pretrained(folder)
    return model


# A CLIPModel's vision tower small enough for conversion and CLIPSIM tests.
TINY_VISION_ENCODER = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
)


def save_clip_model(folder: Path, seed: int = 0, projection_dim: int = 16, **text_config) -> CLIPModel:
    """A random CLIPModel (TINY_VISION_ENCODER, a text tower with `text_config`) and a CLIP BPE tokenizer in `folder`.

    The vocabulary is `save_vocab`'s; the text tower's vocab_size is its size unless given.
    """
    vocab_file, _ = save_vocab(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    vocab_size = len(json.loads(vocab_file.read_text(encoding="utf-8")))
    text = {**TINY_TEXT_ENCODER, "vocab_size": vocab_size, **text_config}
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text, vision_config=TINY_VISION_ENCODER, projection_dim=projection_dim)
    model = randomise(CLIPModel(config))
    model.save_pretrained(folder)
    return model


def save_vocab(folder: Path, vocab_size: int = 700) -> tuple[Path, Path]:
    """CLIP-layout vocab.json + merges.txt (bytes, bytes + '</w>', merge results, the two text markers).

    The merges are learnt by the `tokenizers` trainer on CORPUS, so they follow a real merge order.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False
    )
    learner = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    learner.train_from_iterator([text.lower() for text in CORPUS] * 4, trainer)
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(learner.to_str())["model"]["merges"]
    ]
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return vocab_file, merges_file
