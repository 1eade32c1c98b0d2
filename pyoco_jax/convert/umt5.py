"""transformers UMT5 encoder and tokenizer folders -> our UMT5Encoder and UMT5Tokenizer, without torch.

`load_umt5_encoder` reads a `UMT5EncoderModel` folder (config.json + model.safetensors, or shards
with model.safetensors.index.json; a pipeline folder's `text_encoder/` and a pyoco-convert output too),
`load_umt5_tokenizer` a tokenizer.json (or a pipeline folder's `tokenizer/`), and `encode_prompts`
turns prompts into Wan's text context; `transformers_state_dict` maps our parameters back for export.
Pickle weights are refused unless asked for.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from pyoco_jax.convert.clip import CONFIG_NAME, filled_model, model_folder, read_weights
from pyoco_jax.convert.converted import converted_root, read_component
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.text.umt5 import UMT5Config, UMT5Encoder, padded_prompt_embeddings
from pyoco_jax.models.text.umt5_tokenizer import MAX_LENGTH, UMT5Tokenizer

SUBFOLDER = "text_encoder"
TOKENIZER_NAME = "tokenizer.json"
TABLE = "shared.weight"
TIED_TABLE = "encoder.embed_tokens.weight"  # the same table, saved by some checkpoints as well or instead
_TABLE_MODULES = ("shared", "relative_attention_bias")


def convert_state_dict(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers UMT5EncoderModel tensor names/layouts -> our dotted parameter names/layouts.

    Linear (O, I) -> kernel (I, O); norm weight -> scale; the token and position-bias tables keep
    their layout. The tied token table may come as `shared`, `encoder.embed_tokens` or both (then equal).
    """
    tensors = dict(tensors)
    if TIED_TABLE in tensors:
        tied = tensors.pop(TIED_TABLE)
        if TABLE in tensors and not np.array_equal(tensors[TABLE], tied):
            raise ConversionError(f"{TABLE} and {TIED_TABLE} differ; a UMT5 encoder ties them (one token table)")
        tensors.setdefault(TABLE, tied)
    out = {}
    for name, value in tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight" and module.rsplit(".", 1)[-1] in _TABLE_MODULES:
            out[f"{module}.embedding"] = value
        elif leaf == "weight" and value.ndim == 1:
            out[f"{module}.scale"] = value
        elif leaf == "weight" and value.ndim == 2:
            out[f"{module}.kernel"] = value.T
        else:
            raise ConversionError(f"unexpected tensor {name!r} {value.shape} in a UMT5EncoderModel checkpoint")
    return out


def load_umt5_encoder(
    path: str | Path,
    *,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    attention_backend: str = "xla",
    allow_pickle: bool = False,
) -> UMT5Encoder:
    """Our UMT5Encoder with a transformers `UMT5EncoderModel` checkpoint's weights.

    `path`: the encoder folder, a pipeline folder with `text_encoder/` or a pyoco-convert output. `dtype`: compute dtype
    (norms, softmax and the residual stream stay float32); `param_dtype`: storage dtype. Every
    parameter must come from the checkpoint and every tensor be used (else ConversionError naming them).
    """
    config, params = load_umt5_params(path, allow_pickle=allow_pickle)
    precision = Precision(dtype=dtype, param_dtype=param_dtype)
    build = lambda: UMT5Encoder(config, precision=precision, attention_backend=attention_backend, rngs=nnx.Rngs(0))
    return filled_model(build, params, f"UMT5 encoder {path}")


def read_umt5_config(path: str | Path) -> UMT5Config:
    """The UMT5Config of an encoder folder (or a pipeline folder with `text_encoder/`)."""
    folder = model_folder(path, SUBFOLDER, (CONFIG_NAME,))
    if not (folder / CONFIG_NAME).exists():
        raise ConversionError(f"{folder} is not a UMT5EncoderModel folder (no {CONFIG_NAME})")
    try:
        return UMT5Config.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    except ValueError as err:
        raise ConversionError(f"{folder / CONFIG_NAME}: {err}") from err


def load_umt5_params(path: str | Path, *, allow_pickle: bool = False) -> tuple[UMT5Config, dict[str, np.ndarray]]:
    """(config, parameters by our dotted names and layouts) of an encoder folder, a pipeline folder with
    `text_encoder/`, or a pyoco-convert output."""
    config = read_umt5_config(path)
    folder = model_folder(path, SUBFOLDER, (CONFIG_NAME,))
    if converted_root(folder):  # Already our names and layouts.
        return config, read_component(folder, SUBFOLDER)
    return config, convert_state_dict(read_weights(folder, allow_pickle))


def transformers_state_dict(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our UMT5 parameters -> the tensors a transformers `UMT5EncoderModel` checkpoint holds (the inverse of
    `convert_state_dict`; the tied token table saved once, as `shared.weight`)."""
    out = {}
    for name, value in params.items():
        module, _, leaf = name.rpartition(".")
        value = np.asarray(value)
        if leaf == "kernel":
            value = value.T
        elif leaf not in ("embedding", "scale"):
            raise ConversionError(f"no UMT5EncoderModel equivalent for parameter {name!r} {value.shape}")
        out[f"{module}.weight"] = np.ascontiguousarray(value)
    return out


def _special_token(folder: Path, name: str, default: str) -> str:
    """A special token as special_tokens_map.json or tokenizer_config.json names it (a string or {"content": ...})."""
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        entries: dict[str, Any] = json.loads((folder / file).read_text()) if (folder / file).exists() else {}
        value = entries.get(name)
        if value:
            return value["content"] if isinstance(value, dict) else value
    return default


def load_umt5_tokenizer(path: str | Path, *, max_length: int = MAX_LENGTH) -> UMT5Tokenizer:
    """Our UMT5Tokenizer from a tokenizer folder's tokenizer.json (or a pipeline folder with `tokenizer/`).

    The end and padding tokens come from the folder's special_tokens_map.json / tokenizer_config.json
    (T5's `</s>` and `<pad>` when unnamed); `max_length` is Wan's 512 unless given.
    """
    folder = model_folder(path, "tokenizer", (TOKENIZER_NAME,))
    if not (folder / TOKENIZER_NAME).exists():
        raise ConversionError(
            f"{folder} holds no {TOKENIZER_NAME}; write one with transformers' tokenizer.save_pretrained(folder)"
        )
    try:
        return UMT5Tokenizer(
            Tokenizer.from_file(str(folder / TOKENIZER_NAME)),
            eos_token=_special_token(folder, "eos_token", "</s>"),
            pad_token=_special_token(folder, "pad_token", "<pad>"),
            max_length=max_length,
        )
    except Exception as err:  # A corrupt tokenizer.json or missing special tokens: say which folder.
        raise ConversionError(f"tokenizer in {folder}: {err}") from err


@nnx.jit
def _context(encoder: UMT5Encoder, ids: jax.Array, mask: jax.Array) -> jax.Array:
    return padded_prompt_embeddings(encoder(ids, mask), mask)


def encode_prompts(encoder: UMT5Encoder, tokenizer: UMT5Tokenizer, prompts: str | Sequence[str]) -> jax.Array:
    """Prompts -> Wan's cross-attention context (B, max_length, d_model), zero past each prompt's tokens."""
    ids, mask = tokenizer(prompts)
    if ids.size and ids.max() >= encoder.config.vocab_size:
        raise ValueError(
            f"token id {ids.max()} is outside the UMT5 encoder's vocab ({encoder.config.vocab_size}): "
            "the tokenizer and encoder come from different models"
        )
    return _context(encoder, jnp.asarray(ids), jnp.asarray(mask))
