"""One diffusers component folder (config.json + diffusion_pytorch_model safetensors), found alone or inside a
pipeline folder: the shared reading of the Wan transformer and Wan VAE converters."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from pyoco_jax.convert.clip import component_folder
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.convert.weight_files import has_weight_files, read_weight_files, weight_files

Config = TypeVar("Config")


def read_component_config(path: str | Path, subfolder: str, class_name: str, parse: Callable[[dict], Config]) -> Config:
    """`parse` of the component's config.json; a config it refuses is a ConversionError naming the file."""
    file = component_folder(path, subfolder, f"diffusers {class_name}") / CONFIG_NAME
    try:
        return parse(json.loads(file.read_text()))
    except (ValueError, TypeError, KeyError) as err:
        raise ConversionError(f"{file}: {err}") from err


def read_component_tensors(folder: Path, class_name: str) -> dict[str, np.ndarray]:
    """The folder's safetensors weights (sharded or not); pickle-only weights are refused, with how to re-save."""
    pickles = sorted(p.name for p in folder.glob("diffusion_pytorch_model*.bin"))
    if pickles and not has_weight_files(folder, WEIGHTS_NAME):
        raise ConversionError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}), which can run code when read, so they are "
            f"refused. Re-save them as safetensors: {class_name}.from_pretrained(folder).save_pretrained(out, "
            "safe_serialization=True)"
        )
    return read_weight_files(weight_files(folder, WEIGHTS_NAME))
