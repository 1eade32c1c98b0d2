"""UMT5Encoder and UMT5Tokenizer against transformers: a tiny random UMT5EncoderModel and a Unigram tokenizer.json
trained on the spot (no downloads); hidden states, position buckets, Wan's zero padding, converter errors."""

import html
import json
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers.models.umt5.modeling_umt5 import UMT5Attention

from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.convert.umt5 import encode_prompts, load_umt5_encoder, load_umt5_tokenizer
from pyoco_jax.convert.weight_files import read_weight_files, weight_files
from pyoco_jax.models import axes
from pyoco_jax.models.text.umt5 import UMT5Config, UMT5Encoder, padded_prompt_embeddings
from pyoco_jax.models.text.umt5_layers import relative_position_buckets

# Inner width (heads * d_kv = 24) differs from d_model; 48-token rows reach past max_distance (the far buckets).
CONFIG = dict(
    vocab_size=128,
    d_model=32,
    d_kv=6,
    d_ff=48,
    num_layers=3,
    num_heads=4,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=20,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
)
LENGTH = 48
CORPUS = [
    "a photograph of an astronaut riding a horse on the moon, highly detailed",
    "the quick brown fox jumps over the lazy dog while the sun sets",
    "oil painting of a lighthouse at sunset, waves crashing against the rocks",
    "a cat sitting on a windowsill watching the rain fall outside",
    "two dogs playing fetch in a park during autumn, leaves falling slowly",
    "timelapse of clouds moving over snowy mountains",
    "一只猫坐在窗台上看着雨 café naïve straße",
]
PROMPTS = [
    "",
    "a cat",
    "A Photograph of an ASTRONAUT riding a horse",
    "  double  spaces and\ttabs\nand newlines  ",
    "unknown pieces: xyzzy QWERTY 日本語 🙂",
    "fish &amp;amp; chips &lt;3 &quot;quoted&quot;",
    " ".join(CORPUS),  # beyond max_length: truncated, end token kept
]


def _wan_clean(text: str) -> str:
    """diffusers' WanPipeline `prompt_clean`, without ftfy (not installed)."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


def _t5_like_tokenizer() -> Tokenizer:
    """A Unigram tokenizer shaped like T5's: <pad>=0, </s>=1, <unk>=2, metaspace words, '</s>' appended."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tokenizer


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, transformers.UMT5EncoderModel]:
    """A Wan-like pipeline folder: text_encoder/ (sharded safetensors) and tokenizer/ (tokenizer.json)."""
    root = tmp_path_factory.mktemp("wan_pipeline")
    torch.manual_seed(0)
    model = transformers.UMT5EncoderModel(transformers.UMT5Config(**CONFIG)).eval()
    with torch.no_grad():  # Norm scales away from 1 and a wide position bias, so every part matters.
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif "relative_attention_bias" in name:
                param.normal_(0.0, 1.0)
    model.save_pretrained(root / "text_encoder", max_shard_size="20KB")
    (root / "tokenizer").mkdir()
    _t5_like_tokenizer().save(str(root / "tokenizer" / "tokenizer.json"))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512, **special}
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config))
    return root, model


def _hidden(model: transformers.UMT5EncoderModel, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        mask = None if mask is None else torch.from_numpy(mask).long()
        return model(torch.from_numpy(ids).long(), attention_mask=mask).last_hidden_state.numpy()


def test_hidden_states_match_transformers(pipeline):
    root, reference = pipeline
    assert len(list((root / "text_encoder").glob("*.safetensors"))) > 1  # the sharded layout is what is read
    encoder = load_umt5_encoder(root)  # the pipeline folder: text_encoder/ is found
    rng = np.random.default_rng(0)
    lengths = np.array([LENGTH, 29, 5])
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask, rng.integers(2, CONFIG["vocab_size"], size=mask.shape), 0).astype(np.int32)

    ours = nnx.jit(lambda model, x, m: (model(x, m), model(x)))
    masked, unmasked = (np.asarray(a) for a in ours(encoder, ids, mask))
    want_masked, want_unmasked = _hidden(reference, ids, mask), _hidden(reference, ids)
    error = max(np.abs(masked - want_masked).max(), np.abs(unmasked - want_unmasked).max())
    scale = np.abs(want_masked).max()
    print(f"UMT5 last hidden state vs transformers: max abs error {error:.2e} (|h| up to {scale:.1f})")
    assert error < 1e-4
    assert np.abs(masked[1:, :5] - unmasked[1:, :5]).max() > 1e-2  # the mask changes the padded rows' outputs

    # bfloat16 compute (norms, softmax, residual stream float32): close, not equal.
    low = nnx.jit(lambda model, x, m: model(x, m))(load_umt5_encoder(root, dtype=jnp.bfloat16), ids, mask)
    assert low.dtype == jnp.bfloat16
    low_error = np.abs(np.asarray(low, np.float32) - want_masked).max()
    print(f"UMT5 in bfloat16 vs transformers float32: max abs error {low_error:.2e}")
    assert low_error < 0.1


@pytest.mark.parametrize(
    "buckets, max_distance, length",
    [(32, 128, 512), (16, 20, LENGTH), (8, 9, 40), (64, 300, 700), (10, 7, 30)],
)
def test_position_buckets_match_transformers(buckets, max_distance, length):
    config = transformers.UMT5Config(
        **{**CONFIG, "relative_attention_num_buckets": buckets, "relative_attention_max_distance": max_distance}
    )
    positions = torch.arange(length)
    reference = UMT5Attention(config, has_relative_attention_bias=True)
    want = reference._relative_position_bucket(positions[None, :] - positions[:, None]).numpy()
    np.testing.assert_array_equal(relative_position_buckets(length, buckets, max_distance), want)


def test_padded_prompt_embeddings_zero_past_each_prompt():
    hidden = np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    got = np.asarray(padded_prompt_embeddings(jnp.asarray(hidden), jnp.asarray(mask)))
    # Wan's pipeline: each prompt cut to mask.sum() states, padded back with zeros.
    want = np.stack(
        [np.concatenate([h[:n], np.zeros((6 - n, 4), h.dtype)]) for h, n in zip(hidden, mask.sum(1), strict=True)]
    )
    np.testing.assert_array_equal(got, want)


def test_tokenizer_matches_transformers(pipeline):
    root, _ = pipeline
    folder = root / "tokenizer"
    ours = load_umt5_tokenizer(root, max_length=16)  # the pipeline folder: tokenizer/ is found
    ids, mask = ours(PROMPTS)
    assert ids.shape == mask.shape == (len(PROMPTS), 16) and ids.dtype == np.int32
    special = dict(eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    file_reader = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special)
    auto = transformers.AutoTokenizer.from_pretrained(folder)  # transformers' T5Tokenizer, as Wan's pipeline loads
    for reference in (file_reader, auto):
        want = reference([_wan_clean(p) for p in PROMPTS], padding="max_length", max_length=16, truncation=True)
        np.testing.assert_array_equal(ids, want["input_ids"])
        np.testing.assert_array_equal(mask, want["attention_mask"])
    lengths = mask.sum(1)
    assert lengths[0] == 1 and lengths[-1] == 16  # "" is the end token alone; the long prompt is cut
    assert all(
        row[n - 1] == 1 and not row[n:].any() for row, n in zip(ids, lengths, strict=True)
    )  # </s> last, then <pad>
    assert (ids == 2).any(), "some prompt should hit <unk>"
    assert load_umt5_tokenizer(folder)(PROMPTS[1])[0].shape == (1, 512)  # Wan's length unless given
    np.testing.assert_array_equal(ours(" a\tcat\n")[0], ours("a cat")[0])  # cleaned as Wan cleans


def test_prompts_to_context_equal_wan_pipeline(pipeline):
    root, reference = pipeline
    context = encode_prompts(load_umt5_encoder(root), load_umt5_tokenizer(root, max_length=24), PROMPTS)
    tokens = transformers.AutoTokenizer.from_pretrained(root / "tokenizer")(
        [_wan_clean(p) for p in PROMPTS], padding="max_length", max_length=24, truncation=True, return_tensors="np"
    )
    hidden = _hidden(reference, tokens["input_ids"], tokens["attention_mask"])
    lengths = tokens["attention_mask"].sum(1)
    want = np.stack([np.concatenate([h[:n], np.zeros_like(h[n:])]) for h, n in zip(hidden, lengths, strict=True)])
    assert context.shape == (len(PROMPTS), 24, CONFIG["d_model"])
    assert np.abs(np.asarray(context) - want).max() < 1e-4


def test_prompts_outside_the_vocab_refused(pipeline):
    small = UMT5Config.from_dict({**CONFIG, "vocab_size": 50})
    encoder = nnx.eval_shape(lambda: UMT5Encoder(small, rngs=nnx.Rngs(0)))  # refused before it would run
    with pytest.raises(ValueError, match="outside the UMT5 encoder's vocab"):
        encode_prompts(encoder, load_umt5_tokenizer(pipeline[0], max_length=24), PROMPTS)


def _write_folder(pipeline, folder: Path, edit=lambda tensors: tensors, **config_changes) -> Path:
    """`folder` with the reference's config (changed) and its tensors (edited) in one model.safetensors."""
    source = pipeline[0] / "text_encoder"
    folder.mkdir()
    config = {**json.loads((source / "config.json").read_text()), **config_changes}
    (folder / "config.json").write_text(json.dumps(config))
    tensors = edit(read_weight_files(weight_files(source, "model.safetensors")))
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, folder / "model.safetensors")
    return folder


def _table(model: UMT5Encoder) -> np.ndarray:
    return np.asarray(model.shared.embedding[...])


def test_tied_token_table_under_either_name(pipeline, tmp_path):
    saved = read_weight_files(weight_files(pipeline[0] / "text_encoder", "model.safetensors"))
    table = saved.get("shared.weight", saved.get("encoder.embed_tokens.weight"))
    renamed = lambda t: {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in t.items()}
    only_tied = _write_folder(pipeline, tmp_path / "tied", lambda t: renamed(t))
    both = _write_folder(pipeline, tmp_path / "both", lambda t: {**t, **renamed({"shared.weight": table})})
    for folder in (only_tied, both):
        np.testing.assert_array_equal(_table(load_umt5_encoder(folder)), table)
    differ = lambda t: {**t, "shared.weight": table, "encoder.embed_tokens.weight": table + 1}
    with pytest.raises(ConversionError, match="differ"):
        load_umt5_encoder(_write_folder(pipeline, tmp_path / "differ", differ))


def test_converter_errors_name_what_is_wrong(pipeline, tmp_path):
    bias = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias"
    drop = lambda t: {k: v for k, v in t.items() if k != f"{bias}.weight"}
    with pytest.raises(ConversionError, match=f"missing from the checkpoint: {bias}.embedding"):
        load_umt5_encoder(_write_folder(pipeline, tmp_path / "missing", drop))
    extra = lambda t: {**t, "encoder.block.3.layer.0.SelfAttention.q.weight": np.zeros((24, 32), np.float32)}
    with pytest.raises(ConversionError, match=r"no place in the model: encoder\.block\.3\.layer\.0\.SelfAttention\.q"):
        load_umt5_encoder(_write_folder(pipeline, tmp_path / "extra", extra))
    odd = lambda t: {**t, "encoder.block.0.layer.0.SelfAttention.q.bias": np.zeros(24, np.float32)}
    with pytest.raises(ConversionError, match="unexpected tensor 'encoder.block.0.layer.0.SelfAttention.q.bias'"):
        load_umt5_encoder(_write_folder(pipeline, tmp_path / "odd", odd))
    with pytest.raises(ConversionError, match="model_type='t5'"):
        load_umt5_encoder(_write_folder(pipeline, tmp_path / "t5", model_type="t5"))
    with pytest.raises(ConversionError, match="feed_forward_proj='relu'"):
        load_umt5_encoder(_write_folder(pipeline, tmp_path / "relu", feed_forward_proj="relu"))
    with pytest.raises(ConversionError, match="no config.json"):
        load_umt5_encoder(tmp_path)
    with pytest.raises(ConversionError, match="no tokenizer.json"):
        load_umt5_tokenizer(tmp_path)
    with pytest.raises(ConversionError, match="lacks the special tokens"):
        load_umt5_tokenizer(_special_tokens(pipeline, tmp_path / "tokens", pad_token="[PAD]"))


def _special_tokens(pipeline, folder: Path, **tokens) -> Path:
    shutil.copytree(pipeline[0] / "tokenizer", folder)
    (folder / "special_tokens_map.json").write_text(json.dumps(tokens))
    return folder


def test_pickle_weights_refused_unless_asked(pipeline, tmp_path):
    folder = tmp_path / "pickle"
    folder.mkdir()
    shutil.copy(pipeline[0] / "text_encoder" / "config.json", folder)
    torch.save(pipeline[1].state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="pickle") as refused:
        load_umt5_encoder(folder)
    assert "\n" not in str(refused.value)
    np.testing.assert_array_equal(
        _table(load_umt5_encoder(folder, allow_pickle=True)), _table(load_umt5_encoder(pipeline[0]))
    )


def test_config_and_axis_names():
    config = UMT5Config.from_dict({**CONFIG, "architectures": ["UMT5EncoderModel"], "model_type": "umt5"})
    assert config.d_kv == 6 and config.activation == "gelu_new"
    with pytest.raises(ValueError, match="relative_attention_num_buckets"):
        UMT5Config(relative_attention_num_buckets=32, relative_attention_max_distance=8)
    model = nnx.eval_shape(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)))
    specs = {
        ".".join(map(str, path)): v.get_metadata().get("out_sharding")
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    assert specs["shared.embedding"] == (None, axes.EMBED)
    assert specs["encoder.block.2.layer.0.SelfAttention.q.kernel"] == (axes.EMBED, axes.HEADS)
    assert specs["encoder.block.2.layer.0.SelfAttention.o.kernel"] == (axes.HEADS, axes.EMBED)
    assert specs["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.embedding"] == (axes.RELPOS, axes.HEADS)
    assert specs["encoder.block.1.layer.1.DenseReluDense.wo.kernel"] == (axes.MLP, axes.EMBED)
    assert specs["encoder.final_layer_norm.scale"] == (axes.NORM,)
