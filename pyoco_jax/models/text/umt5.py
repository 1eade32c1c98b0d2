"""UMT5 text encoder (transformers' `UMT5EncoderModel`), the prompt encoder of Wan 2.1.

Token embedding, pre-RMSNorm blocks (self-attention with a relative position bias table in
every layer, a gated feed-forward), a final RMSNorm. Parameter paths mirror transformers'
state-dict names (`shared`, `encoder.block.N.layer.0.SelfAttention.q`, `encoder.final_layer_norm`).
The residual stream stays float32 (T5's activations grow large); matmuls run in the compute dtype.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models.dit.norms import RMSNorm
from pyoco_jax.models.keys import KeySource, ParamKeys
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.text.encoder import ACTIVATIONS, Embedding, dataclass_from_dict
from pyoco_jax.models.text.umt5_layers import Block

MODEL_TYPE = "umt5"


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """The architecture keys of a transformers `UMT5Config` (defaults: transformers' own, umt5-small)."""

    vocab_size: int = 250112
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"

    def __post_init__(self):
        if self.feed_forward_proj.rpartition("-")[0] != "gated" or self.activation not in ACTIVATIONS:
            raise ValueError(
                f"UMT5 feed_forward_proj={self.feed_forward_proj!r} is not supported: give 'gated-<act>' with <act> "
                f"'gelu' (tanh approximation, as transformers reads it) or one of {sorted(ACTIVATIONS)}"
            )
        if self.relative_attention_num_buckets < 4 or self.relative_attention_max_distance <= (
            self.relative_attention_num_buckets // 4
        ):
            raise ValueError(
                f"UMT5 relative_attention_num_buckets={self.relative_attention_num_buckets} must be at least 4 and "
                f"relative_attention_max_distance={self.relative_attention_max_distance} above a quarter of it"
            )

    @property
    def activation(self) -> str:
        """The gate's activation: transformers reads 'gated-gelu' as the tanh approximation ('gelu_new')."""
        act = self.feed_forward_proj.rpartition("-")[2]
        return "gelu_new" if act == "gelu" else act

    @classmethod
    def from_dict(cls, json_dict: Mapping[str, Any]) -> "UMT5Config":
        """From a `UMT5EncoderModel` config.json dict; other keys (dropout, decoder sizes, ...) are ignored."""
        model_type = json_dict.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"model_type={model_type!r}, not {MODEL_TYPE!r}: only UMT5 (a position bias in every layer) loads here"
            )
        return dataclass_from_dict(cls, json_dict)


class Stack(nnx.Module):
    """The blocks and the final norm (a module of its own so paths read `encoder.block.N`)."""

    def __init__(self, config: UMT5Config, *, backend: str, precision: Precision, rngs: KeySource):
        self.block = nnx.List(
            [Block(config, backend=backend, precision=precision, rngs=rngs) for _ in range(config.num_layers)]
        )
        self.final_layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon, precision=precision, rngs=rngs)


class UMT5Encoder(nnx.Module):
    """UMT5 encoder: token ids (B, T) and an optional padding mask (B, T) -> last hidden states (B, T, d_model).

    Padded keys are masked out of attention; padded positions still get outputs (as in transformers),
    which `padded_prompt_embeddings` zeroes the way Wan does.
    """

    def __init__(
        self,
        config: UMT5Config,
        *,
        precision: Precision | None = None,
        attention_backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        keys = ParamKeys(rngs)
        precision = precision or Precision()
        self.config = config
        self.shared = Embedding(config.vocab_size, config.d_model, precision=precision, rngs=keys)
        self.encoder = Stack(config, backend=attention_backend, precision=precision, rngs=keys)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        x = jnp.take(self.shared.embedding[...], input_ids, axis=0).astype(jnp.float32)
        if attention_mask is None:
            mask_bias = jnp.zeros((1, 1, 1, input_ids.shape[1]), jnp.float32)
        else:  # Half the float32 minimum: far below any logit, and no overflow when the position bias is added.
            mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min / 2)
        for block in self.encoder.block:
            x = block(x, mask_bias)
        return self.encoder.final_layer_norm(x)


def padded_prompt_embeddings(hidden_states: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Wan's text context: each prompt's first mask.sum() states kept, the rest zeros (B, T, D).

    Wan's pipeline cuts every prompt's embeddings to its token count and pads back with zeros, so
    the transformer's cross-attention sees zero vectors (not the encoder's padding outputs) there.
    """
    lengths = jnp.sum(attention_mask > 0, axis=-1)
    keep = jnp.arange(hidden_states.shape[1])[None, :] < lengths[:, None]
    return jnp.where(keep[..., None], hidden_states, jnp.zeros((), hidden_states.dtype))
