"""Wan's attention: biased projections and RMS q/k norm over the whole width (across heads).

Self-attention rotates q and k by the 3D RoPE. Cross-attention reads the projected text; an
image-to-video model's blocks also read the projected image tokens through their own k/v projections
(`add_k_proj`, `add_v_proj`, `norm_added_k`) with the same queries, and the two results are summed
before `to_out`. Under a token layout (models/context_parallel.py) self-attention trades tokens for
heads between devices and cross-attention keeps its queries split.
"""

import jax
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.context_parallel import cross_attention, self_attention
from pyoco_jax.models.dit.norms import RMSNorm
from pyoco_jax.models.dit.rope import apply_rope
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Dense, Precision


class WanAttention(nnx.Module):
    """Attention of a Wan block over x (B, L, D): self (`cross=False`) or to the text (and image) context."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        cross: bool,
        image_branch: bool = False,
        eps: float,
        backend: str,
        precision: Precision,
        rngs: KeySource,
    ):
        self.heads, self.backend = heads, backend
        kv_names = (axes.CONTEXT if cross else axes.EMBED, axes.HEADS)
        dense = lambda names: Dense(dim, dim, names=names, precision=precision, rngs=rngs)
        norm = lambda: RMSNorm(dim, eps=eps, precision=precision, rngs=rngs)
        self.to_q, self.to_k, self.to_v = dense((axes.EMBED, axes.HEADS)), dense(kv_names), dense(kv_names)
        self.to_out = dense((axes.HEADS, axes.EMBED))
        self.norm_q, self.norm_k = norm(), norm()
        if image_branch:
            self.add_k_proj, self.add_v_proj = dense((axes.CONTEXT, axes.HEADS)), dense((axes.CONTEXT, axes.HEADS))
            self.norm_added_k = norm()
        else:
            self.add_k_proj = self.add_v_proj = self.norm_added_k = None

    def _heads(self, a: jax.Array) -> jax.Array:
        return a.reshape(*a.shape[:-1], self.heads, a.shape[-1] // self.heads)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        image_context: jax.Array | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
    ) -> jax.Array:
        """x: (B, L, D); context: (B, T, D) projected text, None for self-attention; image_context: (B, S, D)
        projected image tokens (image-to-video blocks only); rope: (cos, sin) per token, self-attention only."""
        source = x if context is None else context
        q = self._heads(self.norm_q(self.to_q(x)))
        k = self._heads(self.norm_k(self.to_k(source)))
        v = self._heads(self.to_v(source))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        attend = self_attention if context is None else cross_attention
        out = attend(q, k, v, backend=self.backend)
        if self.add_k_proj is not None:
            k_image = self._heads(self.norm_added_k(self.add_k_proj(image_context)))
            v_image = self._heads(self.add_v_proj(image_context))
            out = out + cross_attention(q, k_image, v_image, backend=self.backend)
        return self.to_out(out.reshape(*out.shape[:-2], -1))
