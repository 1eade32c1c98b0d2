"""Tiny diffusers AutoencoderKLs with random weights, saved as safetensors folders, for the VAE tests."""

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL

# Two levels, mid-block attention, quant convs: the shape of SD's VAE in small.
TINY = dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32)


def save_tiny_vae(folder: Path, *, seed: int = 0, scale: float = 0.1, **config) -> TorchAutoencoderKL:
    """Builds a diffusers VAE, adds `scale` * N(0, 1) to every parameter and saves it to `folder`.

    The noise moves the norms' 1/0 and the biases' 0 initialisations away from values that
    would hide a mixed-up scale/bias or a missing term.
    """
    config = {**TINY, **config}
    levels = len(config["block_out_channels"])
    torch.manual_seed(seed)
    model = TorchAutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels, **config
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn_like(param))
    model.save_pretrained(folder)
    return model


def to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)
