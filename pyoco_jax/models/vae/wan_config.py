"""The architecture of Wan 2.1's video VAE, keyed as diffusers' `AutoencoderKLWan` config.json.

Wan 2.2's options (`is_residual` blocks, `patch_size`) and encoder attention (`attn_scales`, which
diffusers cannot run either) are refused by name, so such a checkpoint never loads into the wrong network.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

CLASS_NAME = "AutoencoderKLWan"
# Wan 2.1's per-channel latent statistics (diffusers' defaults): diffusion latents = (z - mean) / std.
LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
# Keys of Wan 2.2 (or of a broken encoder) and the value under which they change nothing.
_REFUSED = {"is_residual": False, "patch_size": None, "attn_scales": []}


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
    """diffusers' keys and defaults (which describe the released Wan 2.1 VAE).

    `temporal_downsample` is diffusers' `temperal_downsample`: which encoder levels (all but the
    last) also halve the frames; the decoder upsamples in the mirrored order. Dropout is not kept:
    this VAE is for inference, where diffusers applies none either.
    """

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    in_channels: int = 3
    out_channels: int = 3
    latents_mean: tuple[float, ...] = LATENTS_MEAN
    latents_std: tuple[float, ...] = LATENTS_STD

    def __post_init__(self):
        sizes = dict(base_dim=self.base_dim, z_dim=self.z_dim, num_res_blocks=self.num_res_blocks)
        sizes.update(in_channels=self.in_channels, out_channels=self.out_channels)
        if min(sizes.values()) < 1 or not self.dim_mult or min(self.dim_mult) < 1:
            raise ValueError(f"Wan VAE sizes must be >= 1, got {sizes} and dim_mult={list(self.dim_mult)}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temperal_downsample={list(self.temporal_downsample)} needs one entry per level but the last "
                f"({len(self.dim_mult) - 1} for dim_mult={list(self.dim_mult)})"
            )
        if not len(self.latents_mean) == len(self.latents_std) == self.z_dim or min(self.latents_std) <= 0:
            raise ValueError(
                f"latents_mean and latents_std need z_dim={self.z_dim} entries (std > 0), got "
                f"{len(self.latents_mean)} and {len(self.latents_std)}"
            )

    @property
    def decoder_dim(self) -> int:
        return self.decoder_base_dim or self.base_dim

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along each side (8 for Wan 2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first (4 for Wan 2.1): F frames <-> 1 + (F - 1) / factor latents."""
        return 2 ** sum(self.temporal_downsample)

    @classmethod
    def from_diffusers(cls, json_dict: Mapping[str, Any]) -> "WanVAEConfig":
        """The config of a diffusers `AutoencoderKLWan` config.json (as a dict)."""
        kind = json_dict.get("_class_name", CLASS_NAME)
        if kind != CLASS_NAME:
            raise ValueError(f"the config describes a {kind}, not an {CLASS_NAME}")
        for key, neutral in _REFUSED.items():
            if json_dict.get(key, neutral) not in (neutral, None):
                raise ValueError(f"{CLASS_NAME} {key}={json_dict[key]!r} (Wan 2.2) is not supported, only Wan 2.1")
        d = {f.name: f.default for f in dataclasses.fields(cls)} | json_dict
        return cls(
            base_dim=int(d["base_dim"]),
            decoder_base_dim=None if d["decoder_base_dim"] is None else int(d["decoder_base_dim"]),
            z_dim=int(d["z_dim"]),
            dim_mult=tuple(int(m) for m in d["dim_mult"]),
            num_res_blocks=int(d["num_res_blocks"]),
            temporal_downsample=tuple(bool(t) for t in d.get("temperal_downsample", cls.temporal_downsample)),
            in_channels=int(d["in_channels"]),
            out_channels=int(d["out_channels"]),
            latents_mean=tuple(float(m) for m in d["latents_mean"]),
            latents_std=tuple(float(s) for s in d["latents_std"]),
        )

    def normalize_latents(self, z: jax.Array) -> jax.Array:
        """VAE latents (..., z_dim) -> the unit-scale latents Wan's transformer sees: (z - mean) / std."""
        return (z - jnp.asarray(self.latents_mean, z.dtype)) / jnp.asarray(self.latents_std, z.dtype)

    def denormalize_latents(self, latents: jax.Array) -> jax.Array:
        """Diffusion latents -> what `WanVAE.decode` takes: latents * std + mean."""
        return latents * jnp.asarray(self.latents_std, latents.dtype) + jnp.asarray(self.latents_mean, latents.dtype)
