"""The architecture of a Stable Diffusion VAE (diffusers' `AutoencoderKL`), read from its config.json.

Only the keys that shape the network or its latent scaling are kept; a config.json that asks
for something this implementation does not build (another block type or activation) is
refused with the key to change, rather than loaded into the wrong network.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"

# diffusers' AutoencoderKL defaults for keys a config.json may leave out.
_DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": (DOWN_BLOCK,),
    "up_block_types": (UP_BLOCK,),
    "block_out_channels": (64,),
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "shift_factor": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """An AutoencoderKL's architecture; defaults are a tiny test-sized VAE, not SD's."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    sample_size: int = 32  # Image side the VAE was trained at (informational).
    scaling_factor: float = 0.18215  # Diffusion latents = (z - shift_factor) * scaling_factor.
    shift_factor: float = 0.0
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True

    def __post_init__(self):
        if not self.block_out_channels:
            raise ValueError("a VAE needs at least one entry in block_out_channels")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"norm_num_groups={self.norm_num_groups} does not divide the {channels} channels of "
                    f"block_out_channels={self.block_out_channels}"
                )
        if self.layers_per_block < 1 or self.latent_channels < 1:
            raise ValueError(
                f"layers_per_block ({self.layers_per_block}) and latent_channels ({self.latent_channels}) must be >= 1"
            )

    @property
    def downsampling_factor(self) -> int:
        """Pixels per latent along each side (8 for SD)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, json_dict: Mapping[str, Any]) -> "VAEConfig":
        """The config of a diffusers `AutoencoderKL` config.json (as a dict)."""
        kind = json_dict.get("_class_name", "AutoencoderKL")
        if kind != "AutoencoderKL":
            raise ValueError(f"the config describes a {kind}, not an AutoencoderKL")
        d = {**_DEFAULTS, **json_dict}
        levels = len(d["block_out_channels"])
        side = d["sample_size"]
        if d["act_fn"] != "silu":
            raise ValueError(f"AutoencoderKL act_fn={d['act_fn']!r} is not supported (only 'silu')")
        for key, kind in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
            if list(d[key]) != [kind] * levels:
                raise ValueError(f"AutoencoderKL {key}={list(d[key])} is not supported: needs {levels} x {kind!r}")
        return cls(
            in_channels=int(d["in_channels"]),
            out_channels=int(d["out_channels"]),
            block_out_channels=tuple(int(c) for c in d["block_out_channels"]),
            layers_per_block=int(d["layers_per_block"]),
            latent_channels=int(d["latent_channels"]),
            norm_num_groups=int(d["norm_num_groups"]),
            sample_size=int(side[0] if isinstance(side, (list, tuple)) else side),
            scaling_factor=float(d["scaling_factor"]),
            shift_factor=float(d["shift_factor"] or 0.0),
            mid_block_add_attention=bool(d["mid_block_add_attention"]),
            use_quant_conv=bool(d["use_quant_conv"]),
            use_post_quant_conv=bool(d["use_post_quant_conv"]),
        )

    def scale_latents(self, z: jax.Array) -> jax.Array:
        """VAE latents -> the unit-scale latents a diffusion model is trained on."""
        return (z - self.shift_factor) * self.scaling_factor

    def unscale_latents(self, latents: jax.Array) -> jax.Array:
        """Diffusion latents -> what `decode` takes."""
        return latents / self.scaling_factor + self.shift_factor
