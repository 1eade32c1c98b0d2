"""Wan's inputs as tokens: video patches, the timestep (and its six block modulations), text and image tokens."""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.dit.config import WanConfig
from pyoco_jax.models.embeddings import TimestepEmbedding, sinusoidal_embedding
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Dense, LayerNorm, Precision

MODULATIONS = 6  # shift, scale, gate of self-attention; shift, scale, gate of the feed-forward
IMAGE_NORM_EPS = 1e-5  # diffusers' FP32LayerNorm default, not the config's eps


class PatchEmbedding(nnx.Module):
    """diffusers' Conv3d with stride = kernel = patch, computed as one matmul over flattened patches.

    kernel (pt, ph, pw, C, D): a Conv3d weight (D, C, pt, ph, pw) transposed.
    """

    def __init__(self, config: WanConfig, *, precision: Precision, rngs: KeySource):
        self.dtype, self.patch = precision.dtype, config.patch_size
        names = (axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_IN, axes.EMBED)
        shape = (*config.patch_size, config.in_channels, config.inner_dim)
        kernel = axes.partitioned(nnx.initializers.lecun_normal(), *names)
        self.kernel = nnx.Param(kernel(rngs.params(), shape, precision.param_dtype))
        bias = axes.partitioned(nnx.initializers.zeros, axes.EMBED)
        self.bias = nnx.Param(bias(rngs.params(), (config.inner_dim,), precision.param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, F, H, W, C), each of F, H, W a multiple of its patch side -> (B, F / pt * H / ph * W / pw, D)."""
        b, f, h, w, c = x.shape
        pt, ph, pw = self.patch
        patches = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        patches = patches.reshape(b, -1, pt * ph * pw * c).astype(self.dtype)
        kernel = self.kernel[...].reshape(-1, self.kernel.shape[-1]).astype(self.dtype)
        return jnp.dot(patches, kernel) + self.bias[...].astype(self.dtype)


class TextProjection(nnx.Module):
    """linear_2(gelu_tanh(linear_1(text))): the text encoder's width -> the model width."""

    def __init__(self, text_dim: int, dim: int, *, precision: Precision, rngs: KeySource):
        self.linear_1 = Dense(text_dim, dim, names=(axes.CONTEXT, axes.MLP), precision=precision, rngs=rngs)
        self.linear_2 = Dense(dim, dim, names=(axes.MLP, axes.CONTEXT), precision=precision, rngs=rngs)

    def __call__(self, text: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.gelu(self.linear_1(text), approximate=True))


class FeedForward(nnx.Module):
    """proj_out(gelu(proj_in(x))); diffusers' `net.0.proj` and `net.2`."""

    def __init__(
        self,
        dim_in: int,
        hidden: int,
        dim_out: int,
        *,
        tanh_gelu: bool,
        names: tuple[str, str, str],
        precision: Precision,
        rngs: KeySource,
    ):
        self.tanh_gelu = tanh_gelu
        self.proj_in = Dense(dim_in, hidden, names=names[:2], precision=precision, rngs=rngs)
        self.proj_out = Dense(hidden, dim_out, names=names[1:], precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj_out(jax.nn.gelu(self.proj_in(x), approximate=self.tanh_gelu))


class ImageEmbedding(nnx.Module):
    """CLIP image tokens -> model width: norm1, a gelu feed-forward, norm2; with `pos_embed_seq_len`,
    learned positions are added first (first-last-frame models: both images' tokens in one sequence)."""

    def __init__(self, config: WanConfig, *, precision: Precision, rngs: KeySource):
        image_dim, dim = config.image_dim, config.inner_dim
        self.dtype = precision.dtype
        self.norm1 = LayerNorm(image_dim, eps=IMAGE_NORM_EPS, precision=precision, rngs=rngs)
        self.ff = FeedForward(
            image_dim,
            image_dim,
            dim,
            tanh_gelu=False,
            names=(axes.CONTEXT, axes.MLP, axes.CONTEXT),
            precision=precision,
            rngs=rngs,
        )
        self.norm2 = LayerNorm(dim, eps=IMAGE_NORM_EPS, precision=precision, rngs=rngs)
        if config.pos_embed_seq_len is not None:
            init = axes.partitioned(nnx.initializers.zeros, None, None, axes.CONTEXT)
            shape = (1, config.pos_embed_seq_len, image_dim)
            self.pos_embed = nnx.Param(init(rngs.params(), shape, precision.param_dtype))
        else:
            self.pos_embed = None

    def __call__(self, image: jax.Array) -> jax.Array:
        """(B, S, image_dim) -> (B, S, D); with positions S must be pos_embed_seq_len."""
        if self.pos_embed is not None:
            image = image.astype(jnp.float32) + self.pos_embed[...].astype(jnp.float32)
        return self.norm2(self.ff(self.norm1(image)))


class ConditionEmbedder(nnx.Module):
    """diffusers' `condition_embedder`: timestep -> (temb, modulations); text and image tokens -> model width."""

    def __init__(self, config: WanConfig, *, precision: Precision, rngs: KeySource):
        dim = config.inner_dim
        self.freq_dim, self.dtype = config.freq_dim, precision.dtype
        # diffusers keeps the time embedder in float32 whatever the model's dtype.
        float32 = Precision(jnp.float32, precision.param_dtype)
        self.time_embedder = TimestepEmbedding(config.freq_dim, dim, precision=float32, rngs=rngs)
        self.time_proj = Dense(dim, MODULATIONS * dim, names=(axes.TEMB, axes.EMBED), precision=precision, rngs=rngs)
        self.text_embedder = TextProjection(config.text_dim, dim, precision=precision, rngs=rngs)
        self.image_embedder = ImageEmbedding(config, precision=precision, rngs=rngs) if config.image_dim else None

    def time(self, t: jax.Array, label_embedding: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """t (B,) -> temb (B, D) for the output modulation, and the blocks' modulations (B, 6, D) float32.

        `label_embedding` (B, D) float32, pyoco's class embedding, joins the time embedding before both."""
        sinusoid = sinusoidal_embedding(t, self.freq_dim, flip_sin_to_cos=True, freq_shift=0.0)
        temb = self.time_embedder(sinusoid)
        if label_embedding is not None:
            temb = temb + label_embedding
        temb = temb.astype(self.dtype)
        modulations = self.time_proj(jax.nn.silu(temb))
        return temb, modulations.reshape(t.shape[0], MODULATIONS, -1).astype(jnp.float32)
