"""diffusers' file names and tensor names/layouts <-> ours, for the U-Net and the VAE alike.

Import (`convert_state_dict`) and export (`RENAMES` inverted) share these, so a round trip is exact.
"""

import numpy as np

from pyoco_jax.convert.merge import ConversionError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

RENAMES = (
    (".to_out.0.", ".to_out."),
    (".ff.net.0.proj.", ".ff.geglu."),
    (".ff.net.2.", ".ff.proj_out."),
    (".downsamplers.0.", ".downsampler."),
    (".upsamplers.0.", ".upsampler."),
)


def convert_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """diffusers tensor names/layouts -> our dotted parameter names/layouts.

    Conv weights (O, I, kh, kw) -> kernels (kh, kw, I, O); linear (O, I) -> (I, O); 1x1-conv
    proj_in/proj_out (O, I, 1, 1) -> (I, O) (ours are pointwise Dense); norm weight -> scale;
    the class table keeps its layout.
    """
    out = {}
    for name, value in tensors.items():
        ours = name
        for old, new in RENAMES:
            ours = ours.replace(old, new)
        module, leaf = ours.rsplit(".", 1)
        if leaf == "bias":
            out[ours] = value
            continue
        if leaf != "weight":
            raise ConversionError(f"unexpected tensor {name!r} (neither weight nor bias)")
        if module == "class_embedding":
            out[f"{module}.embedding"] = value
        elif value.ndim == 1:
            out[f"{module}.scale"] = value
        elif value.ndim == 2:
            out[f"{module}.kernel"] = value.T
        elif value.ndim == 4 and module.rsplit(".", 1)[-1] in ("proj_in", "proj_out"):
            out[f"{module}.kernel"] = value.reshape(value.shape[:2]).T
        elif value.ndim == 4:
            out[f"{module}.kernel"] = value.transpose(2, 3, 1, 0)
        else:
            raise ConversionError(f"unexpected {value.ndim}-d weight {name!r} {value.shape}")
    return out
