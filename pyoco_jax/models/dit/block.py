"""One Wan transformer block: modulated self-attention, cross-attention, modulated feed-forward.

The time embedding's six vectors (plus the block's own `scale_shift_table`) shift and scale the
normalised input of self-attention and of the feed-forward and gate their residual updates. Norms and
modulation run in float32, the residual stream in the compute dtype, as diffusers.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.context_parallel import constrain_tokens
from pyoco_jax.models.dit.attention import WanAttention
from pyoco_jax.models.dit.config import WanConfig
from pyoco_jax.models.dit.embeddings import MODULATIONS, FeedForward
from pyoco_jax.models.dit.norms import plain_layer_norm
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import LayerNorm, Precision


def modulation_table(count: int, dim: int, precision: Precision, rngs: KeySource) -> nnx.Param:
    """A learned (1, count, dim) table added to the time modulations, drawn N(0, 1/dim) as diffusers."""
    init = axes.partitioned(nnx.initializers.normal(dim**-0.5), None, None, axes.EMBED)
    return nnx.Param(init(rngs.params(), (1, count, dim), precision.param_dtype))


class WanBlock(nnx.Module):
    """diffusers' `WanTransformerBlock`; `norm2` (affine LayerNorm before cross-attention) only with cross_attn_norm."""

    def __init__(self, config: WanConfig, *, backend: str, precision: Precision, rngs: KeySource):
        dim, heads, eps = config.inner_dim, config.num_attention_heads, config.eps
        self.eps, self.dtype = eps, precision.dtype
        common = dict(eps=eps, backend=backend, precision=precision, rngs=rngs)
        self.attn1 = WanAttention(dim, heads, cross=False, **common)
        self.attn2 = WanAttention(dim, heads, cross=True, image_branch=config.has_image_branch, **common)
        self.norm2 = LayerNorm(dim, eps=eps, precision=precision, rngs=rngs) if config.cross_attn_norm else None
        self.ffn = FeedForward(
            dim,
            config.ffn_dim,
            dim,
            tanh_gelu=True,
            names=(axes.EMBED, axes.MLP, axes.EMBED),
            precision=precision,
            rngs=rngs,
        )
        self.scale_shift_table = modulation_table(MODULATIONS, dim, precision, rngs)

    def __call__(
        self,
        x: jax.Array,
        text: jax.Array,
        image: jax.Array | None,
        modulations: jax.Array,
        rope: tuple[jax.Array, jax.Array],
    ) -> jax.Array:
        """x: (B, L, D) in the compute dtype; text (B, T, D) and image (B, S, D) or None: projected context;
        modulations: (B, 6, D) float32; rope: (cos, sin) per token. Returns x's shape and dtype."""
        x = constrain_tokens(x)  # Under a token layout each device holds and computes its share of the tokens.
        table = self.scale_shift_table[...].astype(jnp.float32) + modulations
        shift, scale, gate, ff_shift, ff_scale, ff_gate = jnp.split(table, MODULATIONS, axis=1)

        h = (plain_layer_norm(x, self.eps) * (1 + scale) + shift).astype(self.dtype)
        x = (x.astype(jnp.float32) + self.attn1(h, rope=rope) * gate).astype(self.dtype)

        h = x if self.norm2 is None else self.norm2(x)
        x = x + self.attn2(h, text, image)

        h = (plain_layer_norm(x, self.eps) * (1 + ff_scale) + ff_shift).astype(self.dtype)
        return (x.astype(jnp.float32) + self.ffn(h).astype(jnp.float32) * ff_gate).astype(self.dtype)
