"""Spatial transformer (diffusers' Transformer2DModel): self-attention, cross-attention, GEGLU."""

import jax
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.attention import attention
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Dense, GroupNorm, LayerNorm, Precision


class Attention(nnx.Module):
    """Multi-head attention with bias-free q/k/v and a biased output projection."""

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        *,
        context_dim: int = 0,
        backend: str,
        precision: Precision,
        rngs: KeySource,
        zero_out: bool = False,
    ):
        inner = heads * head_dim
        kv_dim = context_dim or query_dim
        kv_names = (axes.CONTEXT if context_dim else axes.EMBED, axes.HEADS)
        self.heads, self.backend = heads, backend
        self.to_q = Dense(
            query_dim, inner, names=(axes.EMBED, axes.HEADS), use_bias=False, precision=precision, rngs=rngs
        )
        self.to_k = Dense(kv_dim, inner, names=kv_names, use_bias=False, precision=precision, rngs=rngs)
        self.to_v = Dense(kv_dim, inner, names=kv_names, use_bias=False, precision=precision, rngs=rngs)
        self.to_out = Dense(
            inner, query_dim, names=(axes.HEADS, axes.EMBED), precision=precision, rngs=rngs, zero_init=zero_out
        )

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        bias: jax.Array | None = None,
        causal: bool = False,
    ) -> jax.Array:
        """x: (N, L, C); context: (N, S, D) or None for self-attention."""
        source = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(source), self.to_v(source)
        split = lambda a: a.reshape(*a.shape[:-1], self.heads, a.shape[-1] // self.heads)
        out = attention(split(q), split(k), split(v), bias=bias, causal=causal, backend=self.backend)
        return self.to_out(out.reshape(*out.shape[:-2], -1))


class FeedForward(nnx.Module):
    """GEGLU feed-forward: proj_out(h * gelu(gate)) with (h, gate) = geglu(x)."""

    def __init__(self, dim: int, *, mult: int = 4, precision: Precision, rngs: KeySource):
        inner = dim * mult
        self.geglu = Dense(dim, 2 * inner, names=(axes.EMBED, axes.MLP), precision=precision, rngs=rngs)
        self.proj_out = Dense(inner, dim, names=(axes.MLP, axes.EMBED), precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h, gate = jax.numpy.split(self.geglu(x), 2, axis=-1)
        return self.proj_out(h * jax.nn.gelu(gate, approximate=False))


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm self-attention, cross-attention to `context` (if any), feed-forward; all residual."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        *,
        context_dim: int,
        backend: str,
        precision: Precision,
        rngs: KeySource,
    ):
        self.norm1 = LayerNorm(dim, precision=precision, rngs=rngs)
        self.attn1 = Attention(dim, heads, head_dim, backend=backend, precision=precision, rngs=rngs)
        if context_dim:
            self.norm2 = LayerNorm(dim, precision=precision, rngs=rngs)
            self.attn2 = Attention(
                dim, heads, head_dim, context_dim=context_dim, backend=backend, precision=precision, rngs=rngs
            )
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = LayerNorm(dim, precision=precision, rngs=rngs)
        self.ff = FeedForward(dim, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array | None, frames: int) -> jax.Array:
        """x: (B*F, L, C) tokens of each frame; context: (B, S, D), shared by the frames of a clip."""
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            # Cross-attention is per query, so a clip's frames can share one context without copies.
            n, length, dim = x.shape
            queries = self.norm2(x).reshape(n // frames, frames * length, dim)
            x = x + self.attn2(queries, context).reshape(n, length, dim)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nnx.Module):
    """GroupNorm, proj_in, transformer blocks over the H*W tokens of each frame, proj_out, residual.

    proj_in/proj_out are pointwise (the 1x1 convs of SD 1.x equal the linear layers of SD 2.x), so
    one Dense serves both; the converter reshapes 1x1-conv weights.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        *,
        num_layers: int,
        context_dim: int,
        groups: int,
        backend: str,
        precision: Precision,
        rngs: KeySource,
    ):
        head_dim = channels // heads
        inner = heads * head_dim
        self.norm = GroupNorm(groups, channels, eps=1e-6, precision=precision, rngs=rngs)
        self.proj_in = Dense(channels, inner, names=(axes.CONV_IN, axes.CONV_OUT), precision=precision, rngs=rngs)
        self.transformer_blocks = nnx.List(
            [
                TransformerBlock(
                    inner, heads, head_dim, context_dim=context_dim, backend=backend, precision=precision, rngs=rngs
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = Dense(inner, channels, names=(axes.CONV_IN, axes.CONV_OUT), precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array | None, frames: int) -> jax.Array:
        """x: (B*F, H, W, C)."""
        n, h, w, c = x.shape
        tokens = self.proj_in(self.norm(x).reshape(n, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, context, frames)
        return x.astype(tokens.dtype) + self.proj_out(tokens).reshape(n, h, w, c)
