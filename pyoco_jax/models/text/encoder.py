"""CLIP text transformer (transformers' `CLIPTextModel`), the prompt encoder of Stable Diffusion 1.x/2.x.

Token + position embeddings, pre-LayerNorm encoder layers with causal self-attention, a final
LayerNorm. Parameter paths mirror transformers' state-dict names (`encoder.layers.0.self_attn.q_proj`,
...) so the converter only renames leaves (weight -> kernel/scale/embedding). The encoder layers
also serve CLIP's vision tower (`models.clip_vision`), there without the causal mask.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.attention import attention
from pyoco_jax.models.keys import KeySource, ParamKeys
from pyoco_jax.models.layers import Dense, LayerNorm, Precision

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}
# With this (pre-2023) eos id in config.json transformers pools at the argmax of the ids instead.
LEGACY_EOS_TOKEN_ID = 2


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """The architecture keys of a transformers `CLIPTextConfig` (defaults: transformers' own)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1

    def __post_init__(self):
        check_layers(self, "text encoder")

    @classmethod
    def from_dict(cls, json_dict: Mapping[str, Any]) -> "TextEncoderConfig":
        """From a `CLIPTextModel` config.json dict; other keys (dropout, projection_dim, ...) are ignored."""
        if "text_config" in json_dict:
            raise ValueError("this is a full CLIPModel config; give the text encoder's own config (CLIPTextModel)")
        return dataclass_from_dict(cls, json_dict)


def check_layers(config: "LayerConfig", tower: str) -> None:
    """What every CLIP tower's encoder layers need: a known activation and heads that divide the width."""
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"{tower} hidden_act={config.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{tower} hidden_size={config.hidden_size} is not a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )


def dataclass_from_dict(cls: type, json_dict: Mapping[str, Any]):
    """`cls` from the config.json keys it has fields for (cast to their types); other keys are ignored."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{name: kind(json_dict[name]) for name, kind in fields.items() if json_dict.get(name) is not None})


class LayerConfig(Protocol):
    """What the encoder layers read from their tower's config (text or vision)."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    hidden_act: str
    layer_norm_eps: float


class TextEncoderOutput(NamedTuple):
    """last_hidden_state (B, T, D) after the final LayerNorm; pooled (B, D): its state at the end token;
    hidden_states: the residual stream before layer 1 and after each layer run (no final LayerNorm),
    or None unless asked for."""

    last_hidden_state: jax.Array
    pooled: jax.Array
    hidden_states: tuple[jax.Array, ...] | None


class Embedding(nnx.Module):
    """A lookup table (rows, dim); rows are never sharded (None): tables this small are gathered from."""

    def __init__(self, rows: int, dim: int, *, precision: Precision, rngs: KeySource):
        init = axes.partitioned(nnx.initializers.normal(0.02), None, axes.EMBED)
        self.embedding = nnx.Param(init(rngs.params(), (rows, dim), precision.param_dtype))


class TextEmbeddings(nnx.Module):
    """Token table plus learned absolute positions."""

    def __init__(self, config: TextEncoderConfig, *, precision: Precision, rngs: KeySource):
        self.dtype = precision.dtype
        dim = config.hidden_size
        self.token_embedding = Embedding(config.vocab_size, dim, precision=precision, rngs=rngs)
        self.position_embedding = Embedding(config.max_position_embeddings, dim, precision=precision, rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        tokens = jnp.take(self.token_embedding.embedding[...], input_ids, axis=0)
        positions = self.position_embedding.embedding[: input_ids.shape[1]]
        return (tokens + positions[None]).astype(self.dtype)


class SelfAttention(nnx.Module):
    """Multi-head self-attention (causal unless `causal=False`) with biased q/k/v/out projections."""

    def __init__(
        self, config: LayerConfig, *, backend: str, precision: Precision, rngs: KeySource, causal: bool = True
    ):
        dim = config.hidden_size
        self.heads, self.backend, self.causal = config.num_attention_heads, backend, causal
        project_in = lambda: Dense(dim, dim, names=(axes.EMBED, axes.HEADS), precision=precision, rngs=rngs)
        self.q_proj, self.k_proj, self.v_proj = project_in(), project_in(), project_in()
        self.out_proj = Dense(dim, dim, names=(axes.HEADS, axes.EMBED), precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        split = lambda a: a.reshape(*a.shape[:-1], self.heads, a.shape[-1] // self.heads)
        out = attention(
            split(self.q_proj(x)),
            split(self.k_proj(x)),
            split(self.v_proj(x)),
            causal=self.causal,
            backend=self.backend,
        )
        return self.out_proj(out.reshape(*out.shape[:-2], -1))


class MLP(nnx.Module):
    """fc2(act(fc1(x)))."""

    def __init__(self, config: LayerConfig, *, precision: Precision, rngs: KeySource):
        self.act = ACTIVATIONS[config.hidden_act]
        self.fc1 = Dense(
            config.hidden_size, config.intermediate_size, names=(axes.EMBED, axes.MLP), precision=precision, rngs=rngs
        )
        self.fc2 = Dense(
            config.intermediate_size, config.hidden_size, names=(axes.MLP, axes.EMBED), precision=precision, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nnx.Module):
    """x + attn(norm1(x)), then + mlp(norm2(.))."""

    def __init__(
        self, config: LayerConfig, *, backend: str, precision: Precision, rngs: KeySource, causal: bool = True
    ):
        eps, dim = config.layer_norm_eps, config.hidden_size
        self.self_attn = SelfAttention(config, backend=backend, precision=precision, rngs=rngs, causal=causal)
        self.layer_norm1 = LayerNorm(dim, eps=eps, precision=precision, rngs=rngs)
        self.mlp = MLP(config, precision=precision, rngs=rngs)
        self.layer_norm2 = LayerNorm(dim, eps=eps, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nnx.Module):
    """The stack of encoder layers (a module of its own so paths read `encoder.layers.N`)."""

    def __init__(
        self,
        config: LayerConfig,
        *,
        backend: str,
        precision: Precision,
        rngs: KeySource,
        causal: bool = True,
    ):
        self.layers = nnx.List(
            [
                EncoderLayer(config, backend=backend, precision=precision, rngs=rngs, causal=causal)
                for _ in range(config.num_hidden_layers)
            ]
        )


class TextEncoder(nnx.Module):
    """CLIP text transformer: token ids (B, T) -> `TextEncoderOutput`.

    `skip_last_layers=k` ("clip skip") runs only the first N - k layers and applies the final
    LayerNorm to that output, as diffusers' SD pipelines do for `clip_skip` (the pooled state is
    read from that output too); `k=0` is the plain model.
    """

    def __init__(
        self,
        config: TextEncoderConfig,
        *,
        precision: Precision | None = None,
        attention_backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        keys = ParamKeys(rngs)
        precision = precision or Precision()
        self.config = config
        self.embeddings = TextEmbeddings(config, precision=precision, rngs=keys)
        self.encoder = Encoder(config, backend=attention_backend, precision=precision, rngs=keys)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, precision=precision, rngs=keys)

    def __call__(
        self, input_ids: jax.Array, *, skip_last_layers: int = 0, output_hidden_states: bool = False
    ) -> TextEncoderOutput:
        config = self.config
        batch, length = input_ids.shape
        if length > config.max_position_embeddings:
            raise ValueError(f"{length} tokens exceed the text encoder's {config.max_position_embeddings} positions")
        if not 0 <= skip_last_layers < config.num_hidden_layers:
            raise ValueError(
                f"skip_last_layers={skip_last_layers} must be in [0, {config.num_hidden_layers}) for this text encoder"
            )
        x = self.embeddings(input_ids)
        hidden_states = [x]
        for index in range(config.num_hidden_layers - skip_last_layers):
            x = self.encoder.layers[index](x)
            hidden_states.append(x)
        last = self.final_layer_norm(x)
        if config.eos_token_id == LEGACY_EOS_TOKEN_ID:
            end = jnp.argmax(input_ids, axis=-1)  # the end token has the largest id in CLIP's vocabulary
        else:
            end = jnp.argmax(input_ids == config.eos_token_id, axis=-1)  # first end token (0 if none)
        pooled = last[jnp.arange(batch), end]
        return TextEncoderOutput(last, pooled, tuple(hidden_states) if output_hidden_states else None)
