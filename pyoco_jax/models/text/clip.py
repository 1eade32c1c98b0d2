"""CLIP vision transformer (transformers' `CLIPVisionModel`) and the two-tower `ClipModel` built on it.

Patch embedding (a bias-free conv with stride = kernel = patch size), a class token and learned
absolute positions, `pre_layrnorm` (transformers' spelling), the text tower's pre-LayerNorm encoder
layers without the causal mask, then `post_layernorm` on the class token -> pooled. Parameter paths
mirror transformers' names as the text tower's do. Images are channels-last (B, H, W, C), already
preprocessed (resized, cropped, normalised: see `evaluate.clipsim`).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.keys import KeySource, ParamKeys
from pyoco_jax.models.layers import Dense, LayerNorm, Precision
from pyoco_jax.models.text.encoder import (
    Embedding,
    Encoder,
    TextEncoder,
    TextEncoderConfig,
    check_layers,
    dataclass_from_dict,
)


@dataclasses.dataclass(frozen=True)
class VisionEncoderConfig:
    """The architecture keys of a transformers `CLIPVisionConfig` (defaults: transformers' own, ViT-B/32)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        check_layers(self, "vision encoder")
        if not 0 < self.patch_size <= self.image_size:
            raise ValueError(f"vision encoder patch_size={self.patch_size} must be in [1, {self.image_size}]")

    @property
    def grid(self) -> int:
        """Patches per side (the conv floors: a partial patch at the edge is dropped)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, json_dict: Mapping[str, Any]) -> "VisionEncoderConfig":
        """From a `CLIPVisionModel` config.json dict (or a CLIPModel's `vision_config`); other keys are ignored."""
        if "vision_config" in json_dict:
            raise ValueError("this is a full CLIPModel config; give its vision_config")
        return dataclass_from_dict(cls, json_dict)


class VisionEncoderOutput(NamedTuple):
    """last_hidden_state (B, 1 + patches, D): the encoder's output (no post_layernorm, as transformers);
    pooled (B, D): post_layernorm of its class token."""

    last_hidden_state: jax.Array
    pooled: jax.Array


class PatchEmbedding(nnx.Module):
    """Non-overlapping patches -> vectors: a bias-free conv, kernel (p, p, C, D), stride p."""

    def __init__(self, config: VisionEncoderConfig, *, precision: Precision, rngs: KeySource):
        self.dtype, self.patch = precision.dtype, config.patch_size
        init = axes.partitioned(
            nnx.initializers.lecun_normal(), axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_IN, axes.EMBED
        )
        shape = (self.patch, self.patch, config.num_channels, config.hidden_size)
        self.kernel = nnx.Param(init(rngs.params(), shape, precision.param_dtype))

    def __call__(self, images: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            images.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=(self.patch, self.patch),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y.reshape(y.shape[0], -1, y.shape[-1])  # row-major patches, as transformers' flatten(2)


class VisionEmbeddings(nnx.Module):
    """[class token, patches] + learned positions."""

    def __init__(self, config: VisionEncoderConfig, *, precision: Precision, rngs: KeySource):
        self.dtype = precision.dtype
        init = axes.partitioned(nnx.initializers.normal(0.02), axes.EMBED)
        self.class_embedding = nnx.Param(init(rngs.params(), (config.hidden_size,), precision.param_dtype))
        self.patch_embedding = PatchEmbedding(config, precision=precision, rngs=rngs)
        self.position_embedding = Embedding(config.grid**2 + 1, config.hidden_size, precision=precision, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        patches = self.patch_embedding(images)
        cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype), (patches.shape[0], 1, patches.shape[-1]))
        x = jnp.concatenate([cls, patches], axis=1)
        return (x + self.position_embedding.embedding[...][None]).astype(self.dtype)


class VisionEncoder(nnx.Module):
    """CLIP vision transformer: images (B, image_size, image_size, C) -> `VisionEncoderOutput`."""

    def __init__(
        self,
        config: VisionEncoderConfig,
        *,
        precision: Precision | None = None,
        attention_backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        keys = ParamKeys(rngs)
        precision = precision or Precision()
        eps, dim = config.layer_norm_eps, config.hidden_size
        self.config = config
        self.embeddings = VisionEmbeddings(config, precision=precision, rngs=keys)
        self.pre_layrnorm = LayerNorm(dim, eps=eps, precision=precision, rngs=keys)
        self.encoder = Encoder(config, backend=attention_backend, precision=precision, rngs=keys, causal=False)
        self.post_layernorm = LayerNorm(dim, eps=eps, precision=precision, rngs=keys)

    def __call__(self, images: jax.Array) -> VisionEncoderOutput:
        config = self.config
        expected = (config.image_size, config.image_size, config.num_channels)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the vision encoder takes images (B, {', '.join(map(str, expected))}), got {images.shape}"
            )
        x = self.pre_layrnorm(self.embeddings(images))
        for layer in self.encoder.layers:
            x = layer(x)
        return VisionEncoderOutput(x, self.post_layernorm(x[:, 0]))


class ClipModel(nnx.Module):
    """transformers' `CLIPModel`: both towers and their bias-free projections into the joint space.

    `image_features` / `text_features` equal transformers' `get_image_features` / `get_text_features`:
    projected pooled states, not normalised. `logit_scale` is kept as stored (log of the temperature).
    """

    def __init__(
        self,
        text_config: TextEncoderConfig,
        vision_config: VisionEncoderConfig,
        projection_dim: int,
        *,
        precision: Precision | None = None,
        attention_backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        precision = precision or Precision()
        towers = dict(precision=precision, attention_backend=attention_backend, rngs=rngs)
        self.text_model = TextEncoder(text_config, **towers)
        self.vision_model = VisionEncoder(vision_config, **towers)
        keys = ParamKeys(rngs)
        project = lambda dim: Dense(
            dim, projection_dim, names=(axes.EMBED, None), use_bias=False, precision=precision, rngs=keys
        )
        self.visual_projection = project(vision_config.hidden_size)
        self.text_projection = project(text_config.hidden_size)
        self.logit_scale = nnx.Param(axes.partitioned(nnx.initializers.zeros)(keys.params(), (), precision.param_dtype))

    def image_features(self, images: jax.Array) -> jax.Array:
        """Preprocessed images (B, S, S, C) -> (B, projection_dim)."""
        return self.visual_projection(self.vision_model(images).pooled)

    def text_features(self, input_ids: jax.Array) -> jax.Array:
        """Token ids (B, T) -> (B, projection_dim)."""
        return self.text_projection(self.text_model(input_ids).pooled)
