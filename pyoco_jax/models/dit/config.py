"""The architecture of a Wan-2.1 video transformer, keyed as diffusers' `WanTransformer3DModel` config.json."""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from absl import logging

QK_NORMS = (None, "rms_norm_across_heads")
CLASS_NAME = "WanTransformer3DModel"


@dataclasses.dataclass(frozen=True)
class WanConfig:
    """diffusers' keys and defaults (their defaults describe the 14B model).

    `qk_norm`: diffusers (since 0.35) normalises q and k whatever this says, and so do we (diffusers
    0.33-0.34 and the original Wan code skip the norm when it is None; every published Wan checkpoint
    sets it). `image_dim`/`added_kv_proj_dim`: the image-to-video branch (CLIP image tokens of width
    `image_dim`, projected to the model width, read by added k/v projections, so `added_kv_proj_dim` is
    the model width); `pos_embed_seq_len`: learned positions on those tokens (first-last-frame models).
    """

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    qk_norm: str | None = "rms_norm_across_heads"
    eps: float = 1e-6
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None

    def __post_init__(self):
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be 3 positive ints (frames, height, width), got {self.patch_size}")
        sizes = dict(
            num_attention_heads=self.num_attention_heads,
            attention_head_dim=self.attention_head_dim,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            text_dim=self.text_dim,
            freq_dim=self.freq_dim,
            ffn_dim=self.ffn_dim,
            num_layers=self.num_layers,
            rope_max_seq_len=self.rope_max_seq_len,
        )
        bad = [f"{k}={v}" for k, v in sizes.items() if v < 1]
        if bad:
            raise ValueError(f"Wan transformer sizes must be >= 1: {', '.join(bad)}")
        if self.attention_head_dim % 2:
            raise ValueError(f"attention_head_dim={self.attention_head_dim} must be even (RoPE rotates pairs)")
        if self.qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm={self.qk_norm!r} is not one of {QK_NORMS}")
        if (self.image_dim is None) != (self.added_kv_proj_dim is None):
            raise ValueError("set both image_dim and added_kv_proj_dim (the image-to-video branch) or neither")
        if self.added_kv_proj_dim is not None and self.added_kv_proj_dim != self.inner_dim:
            raise ValueError(
                f"added_kv_proj_dim={self.added_kv_proj_dim} must equal the model width "
                f"num_attention_heads * attention_head_dim = {self.inner_dim}"
            )
        if self.pos_embed_seq_len is not None and self.image_dim is None:
            raise ValueError("pos_embed_seq_len positions image tokens: it needs image_dim")

    @property
    def inner_dim(self) -> int:
        """The model width: heads x head_dim."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)

    @property
    def has_image_branch(self) -> bool:
        return self.image_dim is not None

    @classmethod
    def from_diffusers(cls, json_dict: Mapping[str, Any]) -> "WanConfig":
        """From a `WanTransformer3DModel` config.json dict; `_`-prefixed keys are ignored, other unknown ones logged."""
        name = json_dict.get("_class_name", CLASS_NAME)
        if name != CLASS_NAME:
            raise ValueError(f"this is a {name} config, not a {CLASS_NAME} one")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in json_dict if k not in fields and not k.startswith("_"))
        if unknown:
            logging.warning("ignoring %s config keys this model does not use: %s", CLASS_NAME, unknown)
        values = {k: v for k, v in json_dict.items() if k in fields}
        if "patch_size" in values:
            values["patch_size"] = tuple(int(p) for p in values["patch_size"])
        if not values.get("out_channels"):  # diffusers: out_channels or in_channels
            values["out_channels"] = values.get("in_channels", cls.in_channels)
        return cls(**values)

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json dict `WanTransformer3DModel(**...)` (or from_pretrained) takes."""
        values = dataclasses.asdict(self)
        values["patch_size"] = list(self.patch_size)
        return {"_class_name": CLASS_NAME, **values}


WAN21_1_3B = WanConfig(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
"""Wan2.1-T2V-1.3B (text to video, width 1536), as published (its transformer/config.json)."""

WAN21_14B = dataclasses.replace(WAN21_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
"""Wan2.1-T2V-14B (text to video, width 5120), as published (its transformer/config.json)."""
