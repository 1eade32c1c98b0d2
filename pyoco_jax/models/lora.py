"""LoRA: low-rank adapters on a model's linear layers, the base weights frozen.

Every `Dense` whose path matches `model.lora.targets` gains an adapter and computes
y = x W + b + (alpha / rank) * dropout(x) A B, with A (in, rank) drawn N(0, 1/rank) and B (rank, out)
zero, so an adapted model first computes exactly what its base does. Only A and B train
(`trainable_pattern`): the base weights get no gradient, no optimizer state and no EMA. Stacked layers
(the DiT's scanned blocks) get adapters stacked on the same leading axis, sharded like their kernels on
the kernel's input and output axes. `merge_lora_params` folds the adapters into the kernels (W + scale A B)
for exports that have no place for them.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.errors import ConfigError
from pyoco_jax.models import axes
from pyoco_jax.models.layers import Dense

# Param paths ('blocks/attn1/to_q/lora/a') of the adapters: what trains in a LoRA run.
ADAPTER_PATTERN = r"(^|/)lora/(a|b)$"
_ADAPTER_NAME = re.compile(r"\.lora\.(a|b)$")
INIT_STREAM = 0x10A  # Folded into the run's seed for the adapters' initial A.
# Folds the per-step dropout keys apart from the keys the step draws its other randomness from.
DROPOUT_STREAM = 3


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    dropout: float
    targets: str

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def lora_spec(model_config: ml_collections.ConfigDict) -> LoraSpec | None:
    """The run's adapters (None with `model.lora.rank = 0`); alpha 0 means alpha = rank (scale 1)."""
    lora = model_config.lora
    if not lora.rank:
        return None
    return LoraSpec(int(lora.rank), float(lora.alpha or lora.rank), float(lora.dropout), lora.targets)


def trainable_pattern(config: ml_collections.ConfigDict) -> str:
    """The regex over param paths of what trains: `optim.trainable`, or with LoRA the adapters (and whatever
    `optim.trainable` names besides, e.g. a new class embedding)."""
    if lora_spec(config.model) is None:
        return config.optim.trainable
    return ADAPTER_PATTERN + (f"|{config.optim.trainable}" if config.optim.trainable else "")


class DropoutKeys(nnx.Variable):
    """Per-example keys of one training step's adapter dropout; set on the step's own copy of the model."""


class LoraAdapter(nnx.Module):
    """The low-rank update of one Dense (or of a stack of them: A and B keep its kernel's leading axes)."""

    def __init__(self, kernel: nnx.Param, spec: LoraSpec, key: jax.Array):
        value = kernel.get_value()
        *lead, fan_in, fan_out = value.shape
        names = kernel.get_metadata().get("out_sharding") or (None,) * value.ndim
        down = axes.partitioned(nnx.initializers.normal(1.0 / spec.rank), *names[:-1], None)
        up = axes.partitioned(nnx.initializers.zeros, *names[:-2], None, names[-1])
        self.a = nnx.Param(down(key, (*lead, fan_in, spec.rank), value.dtype))
        self.b = nnx.Param(up(key, (*lead, spec.rank, fan_out), value.dtype))
        self.scale, self.dropout = spec.scale, spec.dropout
        self.dropout_keys: DropoutKeys | None = nnx.data(None)  # Set by enable_dropout, in a train step.

    def __call__(self, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
        if self.dropout_keys is not None:
            x = _dropout(x, self.dropout_keys[...], self.dropout)
        down = jnp.dot(x.astype(dtype), self.a[...].astype(dtype))
        return jnp.dot(down, self.b[...].astype(dtype)) * jnp.asarray(self.scale, dtype)


def _dropout(x: jax.Array, keys: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout drawn per example: rows beyond the batch (frames folded into it, b-major) fold in
    their index, so an example's mask does not depend on the micro-batching or the mesh."""
    if x.shape[0] % keys.shape[0]:
        raise ValueError(f"LoRA dropout: {x.shape[0]} rows do not fold into {keys.shape[0]} examples")
    per_example = jnp.arange(x.shape[0] // keys.shape[0])
    rows = jax.vmap(jax.vmap(jax.random.fold_in, in_axes=(None, 0)), in_axes=(0, None))(keys, per_example)
    keep = jax.vmap(lambda key: jax.random.bernoulli(key, 1.0 - rate, x.shape[1:]))(rows.reshape(-1, keys.shape[-1]))
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _path(path: tuple) -> str:
    return "/".join(map(str, path))


def adapters(model: nnx.Module) -> list[tuple[str, LoraAdapter]]:
    """(path, adapter) of every adapter in `model`, in graph order."""
    return [(_path(path), node) for path, node in nnx.iter_graph(model) if isinstance(node, LoraAdapter)]


def add_lora(model: nnx.Module, spec: LoraSpec, seed: int) -> int:
    """Gives every Dense of `model` whose path matches `spec.targets` an adapter drawn from `seed`; returns how
    many. The base's own draws are untouched: a model with adapters has its seed's base weights."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), INIT_STREAM)
    regex = re.compile(spec.targets)
    dense = [(_path(path), node) for path, node in nnx.iter_graph(model) if isinstance(node, Dense)]
    chosen = [node for path, node in dense if regex.search(path)]
    if not chosen:
        examples = ", ".join(path for path, _ in dense[:6])
        raise ConfigError(
            f"config key 'model.lora.targets': {spec.targets!r} matches no linear layer; their paths look like "
            f"{examples}"
        )
    for index, node in enumerate(chosen):
        node.lora = LoraAdapter(node.kernel, spec, jax.random.fold_in(key, index))
    return len(chosen)


def enable_dropout(model: nnx.Module, example_keys: jax.Array) -> None:
    """Turns adapter dropout on in this (per-step) copy of `model`, with masks from the step's per-example
    keys (B, 2): each adapter, and each layer of a stacked one, folds in its own index."""
    for index, (path, adapter) in enumerate(adapters(model)):
        if adapter.dropout <= 0:
            continue
        keys = _fold_in(_fold_in(example_keys, DROPOUT_STREAM), index)
        lead = adapter.a.get_value().shape[:-2]
        if len(lead) > 1:
            raise ValueError(f"adapter {path}: dropout supports one stacked axis, its kernel has {len(lead)}")
        if lead:  # (layers, B, 2): the scan over the stack hands each layer its own row.
            keys = jax.vmap(_fold_in, in_axes=(None, 0))(keys, jnp.arange(lead[0]))
        adapter.dropout_keys = DropoutKeys(keys)


def _fold_in(keys: jax.Array, data) -> jax.Array:
    """`jax.random.fold_in` on each of a batch of keys (N, 2)."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


def is_adapter(name: str) -> bool:
    """Whether a dotted parameter name ('blocks.attn1.to_q.lora.a') is an adapter's."""
    return _ADAPTER_NAME.search(name) is not None


def adapted_modules(params: dict[str, np.ndarray]) -> list[str]:
    """Dotted module names ('blocks.attn1.to_q') that carry an adapter in `params`."""
    return sorted(name.removesuffix(".lora.a") for name in params if name.endswith(".lora.a"))


def merge_lora_params(params: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """Dotted name -> array with every adapter folded into its kernel (W + scale A B, in float32) and gone."""
    merged = {name: value for name, value in params.items() if not is_adapter(name)}
    for module in adapted_modules(params):
        kernel = np.asarray(params[f"{module}.kernel"])
        down, up = (np.asarray(params[f"{module}.lora.{part}"], np.float32) for part in ("a", "b"))
        update = np.matmul(down, up)
        merged[f"{module}.kernel"] = (kernel.astype(np.float32) + scale * update).astype(kernel.dtype)
    return merged
