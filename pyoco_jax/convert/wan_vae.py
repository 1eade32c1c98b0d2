"""diffusers `AutoencoderKLWan` folders (Wan 2.1's `vae/`) <-> our WanVAE, without torch.

Names map one to one except `upsamplers.0` -> `upsampler` and `resample.1` -> `resample`; Conv3d
weights (O, I, kt, kh, kw) become kernels (kt, kh, kw, I, O), Conv2d weights (O, I, kh, kw) become
(kh, kw, I, O), the attention's 1x1 convs become dense kernels (I, O), and the RMS norms' `gamma`
(C, 1, 1[, 1]) becomes `scale` (C,). Every tensor must be used and every parameter filled, else a
ConversionError lists the names. Pickle `.bin` weights are refused: they can run code when read.
`save_wan_vae` writes the inverse: a folder `AutoencoderKLWan.from_pretrained` loads.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from pyoco_jax.convert.clip import component_folder, filled_model
from pyoco_jax.convert.component import read_component_config, read_component_tensors
from pyoco_jax.convert.converted import converted_root, read_component
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.vae.wan import WanVAE
from pyoco_jax.models.vae.wan_config import CLASS_NAME, WanVAEConfig

SUBFOLDER = "vae"
RENAMES = ((".upsamplers.0.", ".upsampler."), (".resample.1.", ".resample."))
_DENSE = ("to_qkv", "proj")  # The attention's 1x1 Conv2d layers, dense layers here.
_ATTENTION = ".attentions."  # diffusers' attention norms broadcast over (C, H, W), the others over (C, F, H, W).


def _to_ours(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One diffusers tensor -> our dotted name and layout."""
    dotted = f".{name}"
    for old, new in RENAMES:
        dotted = dotted.replace(old, new)
    module, leaf = dotted[1:].rpartition(".")[::2]
    if leaf == "bias":
        return f"{module}.bias", value
    if leaf == "gamma":
        return f"{module}.scale", value.reshape(-1)
    if leaf == "weight" and value.ndim == 5:
        return f"{module}.kernel", value.transpose(2, 3, 4, 1, 0)
    if leaf == "weight" and value.ndim == 4 and module.rpartition(".")[2] in _DENSE:
        return f"{module}.kernel", value.reshape(value.shape[:2]).T
    if leaf == "weight" and value.ndim == 4:
        return f"{module}.kernel", value.transpose(2, 3, 1, 0)
    raise ConversionError(f"unexpected tensor {name!r} {value.shape} in an AutoencoderKLWan checkpoint")


def convert_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """diffusers AutoencoderKLWan tensors -> our dotted parameter names and layouts."""
    return dict(_to_ours(name, value) for name, value in tensors.items())


def read_wan_vae_config(path: str | Path) -> WanVAEConfig:
    """The WanVAEConfig of a diffusers VAE (or pipeline) folder."""
    return read_component_config(path, SUBFOLDER, "AutoencoderKLWan", WanVAEConfig.from_diffusers)


def load_wan_vae_params(path: str | Path) -> tuple[WanVAEConfig, dict[str, np.ndarray]]:
    """(config, parameters by our dotted names and layouts) of a diffusers VAE folder or a pipeline folder
    with a `vae/` subfolder (config.json + diffusion_pytorch_model.safetensors, or its shards), or of a
    pyoco-convert output."""
    folder = component_folder(path, SUBFOLDER, "diffusers AutoencoderKLWan")
    if converted_root(folder):  # A pyoco-convert output: already our names.
        return read_wan_vae_config(folder), read_component(folder, SUBFOLDER)
    return read_wan_vae_config(folder), convert_state_dict(read_component_tensors(folder, "AutoencoderKLWan"))


def load_wan_vae(
    path: str | Path,
    *,
    dtype: str | jnp.dtype = jnp.float32,
    param_dtype: str | jnp.dtype = jnp.float32,
    backend: str = "xla",
) -> WanVAE:
    """Our WanVAE with the weights of a diffusers `AutoencoderKLWan` folder.

    `dtype`: compute dtype (norms and the posterior stay float32); `param_dtype`: storage dtype;
    `backend`: the mid-block attention kernel (see models/attention.py).
    """
    config, params = load_wan_vae_params(path)
    precision = Precision(jnp.dtype(dtype), jnp.dtype(param_dtype))
    build = lambda: WanVAE(config, precision=precision, backend=backend, rngs=nnx.Rngs(0))
    return filled_model(build, params, f"Wan VAE {path}")


def _to_diffusers(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One of our parameters -> diffusers' name and layout (the inverse of `_to_ours`)."""
    dotted = f".{name}"
    for theirs, ours in RENAMES:
        dotted = dotted.replace(ours, theirs)
    module, leaf = dotted[1:].rpartition(".")[::2]
    if leaf == "bias":
        return f"{module}.bias", value
    if leaf == "scale":
        return f"{module}.gamma", value.reshape(-1, 1, 1) if _ATTENTION in f".{module}" else value.reshape(-1, 1, 1, 1)
    if leaf == "kernel" and value.ndim == 5:
        return f"{module}.weight", value.transpose(4, 3, 0, 1, 2)
    if leaf == "kernel" and value.ndim == 2:
        return f"{module}.weight", value.T[:, :, None, None]
    if leaf == "kernel" and value.ndim == 4:
        return f"{module}.weight", value.transpose(3, 2, 0, 1)
    raise ConversionError(f"no AutoencoderKLWan equivalent for parameter {name!r} {value.shape}")


def diffusers_state_dict(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our WanVAE parameters (dotted names) -> diffusers AutoencoderKLWan tensors, contiguous for safetensors."""
    return {k: np.ascontiguousarray(v) for k, v in (_to_diffusers(n, np.asarray(p)) for n, p in params.items())}


def diffusers_config(config: WanVAEConfig) -> dict:
    """The config.json of a diffusers `AutoencoderKLWan` with `config`'s architecture (Wan 2.1: no Wan 2.2 keys)."""
    return {
        "_class_name": CLASS_NAME,
        "base_dim": config.base_dim,
        "decoder_base_dim": config.decoder_base_dim,
        "z_dim": config.z_dim,
        "dim_mult": list(config.dim_mult),
        "num_res_blocks": config.num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": list(config.temporal_downsample),
        "dropout": 0.0,
        "latents_mean": list(config.latents_mean),
        "latents_std": list(config.latents_std),
        "is_residual": False,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "patch_size": None,
        "scale_factor_temporal": config.temporal_factor,  # What WanPipeline sizes latents by.
        "scale_factor_spatial": config.spatial_factor,
    }


def save_wan_vae(
    config: WanVAEConfig, params: dict[str, np.ndarray], path: str | Path, *, dtype: str | None = None
) -> list[Path]:
    """Writes a diffusers `AutoencoderKLWan` folder (config.json + safetensors) of `params` (our dotted names),
    cast to `dtype` if given; returns the files."""
    tensors = diffusers_state_dict(params)
    if dtype is not None:
        tensors = {name: value.astype(jnp.dtype(dtype)) for name, value in tensors.items()}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(diffusers_config(config), indent=2) + "\n")
    save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    return [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
