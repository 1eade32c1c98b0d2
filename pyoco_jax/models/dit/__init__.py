"""Wan-class video diffusion transformers (DiT): the model, its config, the published Wan 2.1 sizes."""

from pyoco_jax.models.dit.backbone import dit_from_config, wan_config
from pyoco_jax.models.dit.config import WAN21_1_3B, WAN21_14B, WanConfig
from pyoco_jax.models.dit.transformer import WanTransformer

__all__ = ["WAN21_14B", "WAN21_1_3B", "WanConfig", "WanTransformer", "dit_from_config", "wan_config"]
