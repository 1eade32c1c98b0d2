"""Tiny random diffusers U-Nets for tests that load pretrained weights (no download)."""

import pathlib

import torch
from diffusers import UNet2DConditionModel


def saved_random_unet(folder: pathlib.Path, scale: float = 0.05, **config) -> UNet2DConditionModel:
    """A `UNet2DConditionModel(**config)` whose weights are moved off their init (zero-init layers then matter),
    saved to `folder` with save_pretrained; seeded, so every test gets the same one."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(scale * torch.randn_like(p))
    unet.save_pretrained(folder)
    return unet
