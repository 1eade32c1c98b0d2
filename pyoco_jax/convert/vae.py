"""diffusers `AutoencoderKL` folders (SD's `vae/`) -> our AutoencoderKL, without torch.

Every checkpoint tensor must find its parameter (same shape) and every parameter must be in the
checkpoint; anything else raises a ConversionError listing the names. Pickle `.bin` weights are
refused unless the caller passes `allow_pickle=True` (they can run code when unpickled).
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from pyoco_jax.convert.clip import component_folder
from pyoco_jax.convert.converted import converted_root, read_component
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME, convert_state_dict
from pyoco_jax.convert.merge import ConversionError, merge_params
from pyoco_jax.convert.weight_files import has_weight_files, read_weight_files, weight_files
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.vae import AutoencoderKL
from pyoco_jax.models.vae.config import VAEConfig

PICKLE_NAME = "diffusion_pytorch_model.bin"
# Attention names of checkpoints saved before diffusers renamed its VAE attention block.
_LEGACY_ATTENTION = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."))


def _read_pickle(file: Path) -> dict[str, np.ndarray]:
    import torch  # Only for weights the user explicitly allowed; torch is not a dependency otherwise.

    state = torch.load(file, map_location="cpu", weights_only=True)
    return {name: (value.float() if value.is_floating_point() else value).numpy() for name, value in state.items()}


def _read_tensors(folder: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    pickled = folder / PICKLE_NAME
    if not has_weight_files(folder, WEIGHTS_NAME) and pickled.exists():
        if not allow_pickle:
            raise ConversionError(
                f"{pickled} is a pickle file, which can run arbitrary code when loaded, so it is refused. Re-save "
                "the VAE as safetensors (diffusers: AutoencoderKL.from_pretrained(folder).save_pretrained(out)), "
                "or pass allow_pickle=True if you trust the file."
            )
        return _read_pickle(pickled)
    return read_weight_files(weight_files(folder, WEIGHTS_NAME))


def _modernised(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Legacy attention names -> current ones; their 1x1-conv weights (O, I, 1, 1) -> linear (O, I)."""
    out = {}
    for name, value in tensors.items():
        if ".attentions." in name:
            for old, new in _LEGACY_ATTENTION:
                name = name.replace(old, new)
            if value.ndim == 4 and value.shape[2:] == (1, 1):
                value = value[:, :, 0, 0]
        out[name] = value
    return out


def load_vae_params(path: str | Path, *, allow_pickle: bool = False) -> tuple[VAEConfig, dict[str, np.ndarray]]:
    """(architecture, tensors by our dotted parameter names and layouts) of a diffusers VAE folder.

    `path`: the VAE folder (config.json + diffusion_pytorch_model.safetensors) or a pipeline folder
    with a `vae/` subfolder.
    """
    folder = component_folder(path, "vae", "diffusers AutoencoderKL")
    try:
        config = VAEConfig.from_diffusers(json.loads((folder / CONFIG_NAME).read_text()))
    except ValueError as err:
        raise ConversionError(f"{folder / CONFIG_NAME}: {err}") from err
    if converted_root(folder):  # A pyoco-convert output: already our names.
        return config, read_component(folder, "vae")
    return config, convert_state_dict(_modernised(_read_tensors(folder, allow_pickle)))


def load_vae(
    path: str | Path,
    *,
    dtype: str | jnp.dtype = jnp.float32,
    param_dtype: str | jnp.dtype = jnp.float32,
    backend: str = "xla",
    allow_pickle: bool = False,
) -> AutoencoderKL:
    """Our AutoencoderKL with the weights of a diffusers VAE folder.

    `dtype`: compute dtype (norms and the posterior stay float32); `param_dtype`: storage dtype;
    `backend`: the attention kernel (see models/attention.py).
    """
    config, params = load_vae_params(path, allow_pickle=allow_pickle)
    precision = Precision(jnp.dtype(dtype), jnp.dtype(param_dtype))
    graphdef, state = nnx.split(
        nnx.eval_shape(lambda: AutoencoderKL(config, precision=precision, backend=backend, rngs=nnx.Rngs(0)))
    )
    merged, report = merge_params(state, params)
    logging.info("loaded the VAE %s: %s", path, report.summary())
    return nnx.merge(graphdef, merged)
