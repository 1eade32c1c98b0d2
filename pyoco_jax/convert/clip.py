"""transformers CLIP text encoder and tokenizer folders -> our TextEncoder and ClipTokenizer, without torch.

`load_text_encoder` reads a `CLIPTextModel` folder (config.json + model.safetensors, or a pipeline
folder with `text_encoder/`), `load_tokenizer` a `CLIPTokenizer` folder (tokenizer.json, or
vocab.json + merges.txt, with tokenizer_config.json; or a pipeline folder with `tokenizer/`), and
`encode_prompts` turns prompts into the U-Net's cross-attention `context`. The folder, weight and
name helpers also serve the full CLIPModel loader (`convert.clip_model`).
"""

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from pyoco_jax.convert.converted import converted_root, read_component
from pyoco_jax.convert.merge import ConversionError, merge_params
from pyoco_jax.convert.weight_files import has_weight_files, read_weight_files, weight_files
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.text import TextEncoder, TextEncoderConfig
from pyoco_jax.models.text.tokenizer import CONTEXT_LENGTH, END_OF_TEXT, START_OF_TEXT, ClipTokenizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
# Buffers some checkpoints carry that are not parameters (positions are always 0..T-1 here).
IGNORED_TENSORS = ("embeddings.position_ids",)
_PREFIX = "text_model."  # transformers < 5 nested the model under `text_model`
_TABLES = ("token_embedding", "position_embedding")
# transformers' stand-in for "no limit" is 1e30; CLIP's context length applies then.
_UNSET_MAX_LENGTH = 10**6


def model_folder(path: str | Path, subfolder: str, markers: tuple[str, ...]) -> Path:
    """`path`, or its `subfolder` when only that holds one of the `markers` (a pipeline folder)."""
    folder = Path(path)
    found = lambda f: any((f / m).exists() for m in markers)
    if not found(folder) and found(folder / subfolder):
        folder = folder / subfolder  # a whole pipeline folder: take its part
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder")
    return folder


def component_folder(path: str | Path, subfolder: str, what: str) -> Path:
    """A diffusers component folder holding config.json: `path`, or its `subfolder` in a pipeline folder."""
    folder = Path(path)
    if not (folder / CONFIG_NAME).exists() and (folder / subfolder / CONFIG_NAME).exists():
        folder = folder / subfolder  # A whole pipeline folder: take its part.
    if not (folder / CONFIG_NAME).exists():
        raise ConversionError(f"{folder} is not a {what} folder (no {CONFIG_NAME})")
    return folder


def read_weights(folder: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    """A transformers folder's tensors: model.safetensors (or shards); pytorch_model.bin only if `allow_pickle`."""
    if not has_weight_files(folder, WEIGHTS_NAME) and (folder / PICKLE_NAME).exists():
        if not allow_pickle:
            raise ConversionError(
                f"{folder} holds only pickle-based {PICKLE_NAME}, which can run code when read: re-save it as "
                f"safetensors, or pass allow_pickle=True if you trust its source"
            )
        import torch  # only for a pickle the user explicitly accepted

        state = torch.load(folder / PICKLE_NAME, map_location="cpu", weights_only=True)
        return {name: t.float().numpy() if t.is_floating_point() else t.numpy() for name, t in state.items()}
    return read_weight_files(weight_files(folder, WEIGHTS_NAME))


def convert_state_dict(tensors: Mapping[str, np.ndarray], prefix: str = _PREFIX) -> dict[str, np.ndarray]:
    """transformers CLIPTextModel tensor names/layouts -> our dotted parameter names/layouts.

    Linear (O, I) -> kernel (I, O); LayerNorm weight -> scale; embedding tables keep their layout;
    a leading `prefix` is dropped and `IGNORED_TENSORS` skipped. The vision tower's encoder, norms
    and position table follow the same rules (with prefix `vision_model.`).
    """
    out = {}
    for name, value in tensors.items():
        ours = name.removeprefix(prefix)
        if ours in IGNORED_TENSORS:
            continue
        module, leaf = ours.rsplit(".", 1) if "." in ours else ("", ours)
        if leaf == "bias":
            out[ours] = value
        elif leaf == "weight" and module.rsplit(".", 1)[-1] in _TABLES:
            out[f"{module}.embedding"] = value
        elif leaf == "weight" and value.ndim == 1:
            out[f"{module}.scale"] = value
        elif leaf == "weight" and value.ndim == 2:
            out[f"{module}.kernel"] = value.T
        else:
            raise ConversionError(f"unexpected tensor {name!r} {value.shape} in a CLIP checkpoint")
    return out


def filled_model(build: Callable[[], nnx.Module], params: Mapping[str, np.ndarray], what: str) -> nnx.Module:
    """The module `build()` makes (never initialised) with every parameter taken from `params`.

    Every tensor must find its place and every parameter be given (else ConversionError naming them).
    """
    graphdef, state = nnx.split(nnx.eval_shape(build))
    merged, report = merge_params(state, params)
    if report.new or report.partial:  # merge_params lets a video model's new layers stay fresh; CLIP has none
        raise ConversionError(f"{what}: missing from the checkpoint: {report.new + report.partial}")
    logging.info("loaded %s: %s", what, report.summary())
    return nnx.merge(graphdef, merged)


def load_text_encoder(
    path: str | Path,
    *,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    attention_backend: str = "xla",
    allow_pickle: bool = False,
) -> TextEncoder:
    """Our TextEncoder with a transformers `CLIPTextModel` checkpoint's weights.

    `path`: the text encoder folder or a pipeline folder with `text_encoder/`. `dtype`: compute
    dtype (norms and softmax stay float32); `param_dtype`: storage dtype. Every parameter must come
    from the checkpoint and every tensor be used (else ConversionError naming them).
    """
    folder = model_folder(path, "text_encoder", (CONFIG_NAME,))
    if not (folder / CONFIG_NAME).exists():
        raise ConversionError(f"{folder} is not a CLIPTextModel folder (no {CONFIG_NAME})")
    try:
        config = TextEncoderConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    except ValueError as err:
        raise ConversionError(f"{folder / CONFIG_NAME}: {err}") from err
    if converted_root(folder):  # A pyoco-convert output: already our names.
        params = read_component(folder, "text_encoder")
    else:
        params = convert_state_dict(read_weights(folder, allow_pickle))
    precision = Precision(dtype=dtype, param_dtype=param_dtype)
    build = lambda: TextEncoder(config, precision=precision, attention_backend=attention_backend, rngs=nnx.Rngs(0))
    return filled_model(build, params, f"text encoder {folder}")


def _read_json(file: Path) -> dict[str, Any]:
    return json.loads(file.read_text()) if file.exists() else {}


def _token(value: Any) -> str | None:
    """A special token as tokenizer configs write it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _vocab_and_merges(folder: Path, config: dict) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int]]:
    if (folder / "tokenizer.json").exists():
        data = json.loads((folder / "tokenizer.json").read_text())
        model = data.get("model", {})
        if model.get("type") != "BPE" or model.get("end_of_word_suffix") != "</w>":
            raise ConversionError(f"{folder / 'tokenizer.json'} is not a CLIP BPE tokenizer (BPE with '</w>' words)")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        added = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        return model["vocab"], merges, added
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise ConversionError(f"{folder / 'merges.txt'} has lines that are not two tokens: {bad[:5]}")
        added = {t["content"]: int(i) for i, t in config.get("added_tokens_decoder", {}).items()}
        return json.loads((folder / "vocab.json").read_text(encoding="utf-8")), merges, added
    raise ConversionError(f"{folder} holds no tokenizer.json, nor vocab.json + merges.txt")


def load_tokenizer(path: str | Path, *, max_length: int | None = None) -> ClipTokenizer:
    """Our ClipTokenizer from a transformers CLIPTokenizer folder (or a pipeline folder with `tokenizer/`).

    Special tokens and `model_max_length` come from tokenizer_config.json (special_tokens_map.json
    overrides the tokens); `max_length` overrides the length, which is 77 when the folder sets none.
    """
    folder = model_folder(path, "tokenizer", ("tokenizer.json", "vocab.json", "tokenizer_config.json"))
    config = _read_json(folder / "tokenizer_config.json")
    names = {**config, **_read_json(folder / "special_tokens_map.json")}
    vocab, merges, added = _vocab_and_merges(folder, config)
    if max_length is None:
        stored = int(config.get("model_max_length") or _UNSET_MAX_LENGTH)
        max_length = stored if stored < _UNSET_MAX_LENGTH else CONTEXT_LENGTH
    try:
        return ClipTokenizer(
            vocab,
            merges,
            bos_token=_token(names.get("bos_token")) or START_OF_TEXT,
            eos_token=_token(names.get("eos_token")) or END_OF_TEXT,
            pad_token=_token(names.get("pad_token")) or END_OF_TEXT,
            unk_token=_token(names.get("unk_token")) or END_OF_TEXT,
            special_tokens=added,
            max_length=max_length,
        )
    except ValueError as err:
        raise ConversionError(f"tokenizer in {folder}: {err}") from err


@functools.partial(nnx.jit, static_argnames=("skip_last_layers",))
def _context(encoder: TextEncoder, ids: jax.Array, skip_last_layers: int) -> jax.Array:
    return encoder(ids, skip_last_layers=skip_last_layers).last_hidden_state


def encode_prompts(
    encoder: TextEncoder, tokenizer: ClipTokenizer, prompts: str | Sequence[str], *, skip_last_layers: int = 0
) -> jax.Array:
    """Prompts -> cross-attention context (B, max_length, D); "" gives the null condition of guidance.

    `skip_last_layers=k` takes the k-th layer from the end, final LayerNorm applied (diffusers'
    `clip_skip`; SD 2.x checkpoints already drop their last layer, so they use 0).
    """
    return _context(encoder, jnp.asarray(checked_ids(encoder.config, tokenizer, prompts)), skip_last_layers)


def checked_ids(config: TextEncoderConfig, tokenizer: ClipTokenizer, prompts: str | Sequence[str]) -> np.ndarray:
    """Token ids (B, max_length) of `prompts`, checked to fit a text encoder of `config` (else ValueError)."""
    ids = tokenizer(prompts)
    if ids.shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"the tokenizer pads to {ids.shape[1]} tokens but the text encoder has {config.max_position_embeddings} "
            f"positions; load the tokenizer with max_length={config.max_position_embeddings}"
        )
    if ids.max() >= config.vocab_size:
        raise ValueError(
            f"token id {ids.max()} is outside the text encoder's vocab ({config.vocab_size}): "
            "the tokenizer and text encoder come from different models"
        )
    return ids
