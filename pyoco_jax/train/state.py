"""The train state: everything a step reads and writes, one pytree for jit and Orbax."""

import re

import flax.struct
import jax
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """Params are split into `params` (trained) and `frozen` (not trained, no optimizer state).

    `rng` is the run's root key; every draw of step s comes from fold_in(rng, s),
    so a resumed run continues exactly.
    """

    step: jax.Array
    params: nnx.State
    frozen: nnx.State
    opt_state: optax.OptState
    ema: nnx.State
    rng: jax.Array
    nonfinite_streak: jax.Array
    nonfinite_total: jax.Array


def param_path(path: tuple) -> str:
    """A param's path as `a/b/0/c`: the string every `optim` regex matches.

    Takes NNX paths (str and int) and JAX key paths alike, so `optim.trainable` (an NNX filter) and
    `optim.lr_scale_pattern` (an optax mask) name params the same way; a Variable's `.value` is left out.
    """
    names = (
        getattr(key, "key", getattr(key, "idx", key)) for key in path if not isinstance(key, jax.tree_util.GetAttrKey)
    )
    return "/".join(map(str, names))


def trainable_filter(pattern: str):
    """An NNX filter for the Params whose path matches `pattern` (all Params if empty)."""
    if not pattern:
        return nnx.Param
    regex = re.compile(pattern)

    def matches(path, value) -> bool:
        return isinstance(value, nnx.Param) and regex.search(param_path(path)) is not None

    return matches


def split_model(model: nnx.Module, trainable_pattern: str) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trained params, everything else)."""
    return nnx.split(model, trainable_filter(trainable_pattern), ...)


def create_train_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, trainable_pattern: str, seed: int
) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params, frozen = split_model(model, trainable_pattern)
    if not jax.tree.leaves(params):
        raise ValueError(f"optim.trainable={trainable_pattern!r} matches no parameter; check the regex.")
    state = TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=params,
        frozen=frozen,
        opt_state=optimizer.init(params),
        ema=jax.tree.map(lambda x: x.astype(jax.numpy.float32), params),
        rng=jax.random.PRNGKey(seed),
        nonfinite_streak=jax.numpy.zeros((), jax.numpy.int32),
        nonfinite_total=jax.numpy.zeros((), jax.numpy.int32),
    )
    return graphdef, state
