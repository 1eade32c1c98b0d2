"""Which model family a folder holds, read from the class names in its config files: the one owner of that decision.

pyoco_jax runs two latent text-to-video families: Stable Diffusion's (an `AutoencoderKL` VAE, a CLIP text
encoder, a U-Net) and Wan 2.1's (an `AutoencoderKLWan` VAE, a UMT5 text encoder, a `WanTransformer3DModel`).
No config key names the family: `pyoco-convert --diffusers`, `vae.path` and `text.path` folders state it in
their model_index.json / config.json, and a pyoco-convert output keeps those files, so a raw diffusers folder
and its converted checkpoint always read as the same family.
"""

import json
from pathlib import Path

from pyoco_jax.convert.clip import CONFIG_NAME, component_folder, model_folder
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.models.text.umt5 import MODEL_TYPE as UMT5_MODEL_TYPE
from pyoco_jax.models.vae.wan_config import CLASS_NAME as WAN_VAE_CLASS

SD, WAN = "sd", "wan"
WAN_PIPELINE = "WanPipeline"  # diffusers' text-to-video Wan pipeline; its image-to-video siblings are refused.
MODEL_INDEX = "model_index.json"


def _json(file: Path) -> dict:
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except json.JSONDecodeError as err:
        raise ConversionError(f"{file} is not valid JSON: {err}") from None


def pipeline_family(folder: str | Path) -> str:
    """SD or WAN for a diffusers pipeline folder: its model_index.json's pipeline class, else its components
    (a `transformer/` folder is Wan's, a `unet/` one Stable Diffusion's)."""
    folder = Path(folder)
    name = _json(folder / MODEL_INDEX).get("_class_name", "")
    if name == WAN_PIPELINE:
        return WAN
    if name.startswith("Wan"):
        raise ConversionError(f"{folder} holds a {name}; only text-to-video {WAN_PIPELINE} folders convert")
    return WAN if not name and (folder / "transformer").is_dir() else SD


def vae_family(path: str | Path) -> str:
    """SD or WAN for a VAE folder (or a pipeline folder with `vae/`): `AutoencoderKLWan` is Wan's."""
    folder = component_folder(path, "vae", "diffusers VAE")
    return WAN if _json(folder / CONFIG_NAME).get("_class_name") == WAN_VAE_CLASS else SD


def text_family(path: str | Path) -> str:
    """SD or WAN for a text encoder folder (or a pipeline folder with `text_encoder/`): UMT5 is Wan's, else CLIP."""
    folder = model_folder(path, "text_encoder", (CONFIG_NAME,))
    return WAN if _json(folder / CONFIG_NAME).get("model_type") == UMT5_MODEL_TYPE else SD
