"""A transformers `CLIPModel` folder -> our ClipModel and ClipTokenizer, without torch (for CLIPSIM).

The folder (e.g. openai/clip-vit-base-patch32) holds config.json with `text_config`, `vision_config`
and `projection_dim`; model.safetensors with `text_model.*`, `vision_model.*`,
`visual_projection.weight`, `text_projection.weight` and `logit_scale`; and the tokenizer files.
Names follow `convert.clip.convert_state_dict`'s rules, plus the vision tower's patch conv and class token.
"""

import json
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from pyoco_jax.convert.clip import CONFIG_NAME, convert_state_dict, filled_model, load_tokenizer, read_weights
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.text import TextEncoderConfig
from pyoco_jax.models.text.clip import ClipModel, VisionEncoderConfig
from pyoco_jax.models.text.tokenizer import ClipTokenizer

TEXT_PREFIX, VISION_PREFIX = "text_model.", "vision_model."
_PATCH = "embeddings.patch_embedding.weight"
_CLASS = "embeddings.class_embedding"
_PROJECTION_DIM = 512  # transformers' CLIPConfig default


def convert_vision_state_dict(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers CLIPVisionModel names/layouts -> ours (a leading `vision_model.` dropped).

    The patch conv (D, C, p, p) -> kernel (p, p, C, D), the class token kept; the rest as the text tower's.
    """
    out, rest = {}, {}
    for name, value in tensors.items():
        ours = name.removeprefix(VISION_PREFIX)
        if ours == _PATCH and value.ndim == 4:
            out["embeddings.patch_embedding.kernel"] = value.transpose(2, 3, 1, 0)
        elif ours == _CLASS:
            out[ours] = value
        else:
            rest[ours] = value
    return out | convert_state_dict(rest, prefix="")


def convert_clip_state_dict(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers CLIPModel names/layouts -> ClipModel's: each tower's own rules under its prefix,
    projections (P, D) -> kernels (D, P), `logit_scale` as a scalar."""
    text, vision, rest = {}, {}, {}
    for name, value in tensors.items():
        part = text if name.startswith(TEXT_PREFIX) else vision if name.startswith(VISION_PREFIX) else rest
        part[name] = value
    out = {TEXT_PREFIX + k: v for k, v in convert_state_dict(text).items()}
    out |= {VISION_PREFIX + k: v for k, v in convert_vision_state_dict(vision).items()}
    if "logit_scale" in rest:
        out["logit_scale"] = np.asarray(rest.pop("logit_scale")).reshape(())
    return out | convert_state_dict(rest, prefix="")


def load_clip_model(
    path: str | Path,
    *,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    attention_backend: str = "xla",
    allow_pickle: bool = False,
) -> tuple[ClipModel, ClipTokenizer]:
    """Our ClipModel with a transformers `CLIPModel` folder's weights, and the folder's tokenizer.

    Every parameter must come from the checkpoint and every tensor be used (else ConversionError
    naming them); pytorch_model.bin is read only with `allow_pickle`.
    """
    folder = Path(path)
    if not (folder / CONFIG_NAME).is_file():
        raise ConversionError(f"{folder} is not a CLIPModel folder (no {CONFIG_NAME})")
    json_dict = json.loads((folder / CONFIG_NAME).read_text())
    if "text_config" not in json_dict or "vision_config" not in json_dict:
        raise ConversionError(f"{folder / CONFIG_NAME} is not a CLIPModel config (no text_config and vision_config)")
    try:
        text_config = TextEncoderConfig.from_dict(json_dict["text_config"])
        vision_config = VisionEncoderConfig.from_dict(json_dict["vision_config"])
    except ValueError as err:
        raise ConversionError(f"{folder / CONFIG_NAME}: {err}") from err
    projection_dim = int(json_dict.get("projection_dim") or _PROJECTION_DIM)
    params = convert_clip_state_dict(read_weights(folder, allow_pickle))
    precision = Precision(dtype=dtype, param_dtype=param_dtype)
    build = lambda: ClipModel(
        text_config,
        vision_config,
        projection_dim,
        precision=precision,
        attention_backend=attention_backend,
        rngs=nnx.Rngs(0),
    )
    return filled_model(build, params, f"CLIP model {folder}"), load_tokenizer(folder)
