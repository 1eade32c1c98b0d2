"""Run a function with all its random bits taken from one threefry stream, drawn in one kernel.

A model's initialisation draws one threefry kernel per parameter, and compiling hundreds of those is
what makes a fresh state slow to compile (`python -m benchmarks.init_compile`). `one_draw(fn, seed)`
traces `fn`, lays the bits every `random_bits` asks for end to end in one stream per bit width, and hands
each its slice, in trace order. The transforms after the bits (truncated normal, fan-in scale) are
untouched, so every parameter keeps its distribution; only the stream changes. Draws inside control
flow (scan, cond) keep their own kernels.

One kernel makes one array, which a sharded output would have to gather and scatter. With
`sharded=True` each slice is computed where it lies instead: threefry is a counter-based generator, so a
slice is threefry of its own counters (offset + index), elementwise and partitioned like its output.
That is one kernel per draw again, with the same values: a seed gives the same state on every mesh.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal
from jax.extend.random import threefry2x32_p

_CALLS = ("jit", "pjit", "closed_call")


def one_draw(fn: Callable[[], Any], seed: int, sharded: bool = False) -> Any:
    """`fn()`, with the random bits it draws sliced from one threefry stream per bit width, keyed by `seed`.

    `sharded`: compute each slice on its own (for outputs laid out over a mesh); same values.
    """
    closed, out_tree = jax.make_jaxpr(fn, return_shape=True)()
    requests = list(_bit_requests(closed.jaxpr))
    widths = sorted({width for _, width in requests})
    keys = dict(zip(widths, jax.random.split(jax.random.key(seed, impl="threefry2x32"), len(widths)), strict=False))
    slices = _counted_slices(requests, keys) if sharded else _flat_slices(requests, keys)
    outs = _evaluate(closed.jaxpr, closed.consts, [], slices)
    if next(slices, None) is not None:
        raise AssertionError("one_draw: fewer random_bits evaluated than traced")
    return jax.tree.unflatten(jax.tree.structure(out_tree), outs)


def _bit_requests(jaxpr: Jaxpr) -> Iterator[tuple[tuple[int, ...], int]]:
    """(shape, bit width) of every random_bits, in the order `_evaluate` meets them."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "random_bits":
            yield eqn.outvars[0].aval.shape, eqn.params["bit_width"]
        elif eqn.primitive.name in _CALLS:
            yield from _bit_requests(_inner(eqn).jaxpr)


def _offsets(requests: list[tuple[tuple[int, ...], int]]) -> tuple[list[int], dict[int, int]]:
    """Where each request starts in its width's stream, and each stream's length."""
    starts, totals = [], {}
    for shape, width in requests:
        starts.append(totals.get(width, 0))
        totals[width] = starts[-1] + math.prod(shape)
    return starts, totals


def _flat_slices(requests: list, keys: dict[int, jax.Array]) -> Iterator[jax.Array]:
    starts, totals = _offsets(requests)
    flats = {width: jax.random.bits(keys[width], (total,), _uint(width)) for width, total in totals.items()}
    for (shape, width), start in zip(requests, starts, strict=True):
        yield jax.lax.slice_in_dim(flats[width], start, start + math.prod(shape)).reshape(shape)


def _counted_slices(requests: list, keys: dict[int, jax.Array]) -> Iterator[jax.Array]:
    """The bits `_flat_slices` yields, each from its own counters."""
    if not jax.config.jax_threefry_partitionable:
        raise ValueError("one_draw(sharded=True) needs jax_threefry_partitionable (the default since jax 0.5)")
    starts, _ = _offsets(requests)
    for (shape, width), start in zip(requests, starts, strict=True):
        yield _counter_bits(keys[width], start, shape, width)


def _counter_bits(key: jax.Array, start: int, shape: tuple[int, ...], width: int) -> jax.Array:
    """Elements start.. of `jax.random.bits(key, (total,))` as `shape`: its partitionable threefry of the
    row-major index, as a 64-bit counter split into two 32-bit words."""
    if math.prod(shape) >= 2**32:
        raise ValueError(f"one_draw: a single draw of shape {shape} has 2**32 or more elements")
    index = sum(
        jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * jnp.uint32(math.prod(shape[dim + 1 :]))
        for dim in range(len(shape))
    )
    low = index + jnp.uint32(start % 2**32)  # Wraps; the carry goes to the high word.
    high = jnp.broadcast_to(jnp.uint32(start // 2**32) + (low < jnp.uint32(start % 2**32)).astype(jnp.uint32), shape)
    bits1, bits2 = threefry2x32_p.bind(*jax.random.key_data(key), high, low)
    if width == 64:
        return (bits1.astype(jnp.uint64) << jnp.uint64(32)) | bits2.astype(jnp.uint64)
    return (bits1 ^ bits2).astype(_uint(width))


def _uint(width: int) -> jnp.dtype:
    return jnp.dtype(f"uint{width}")


def _inner(eqn) -> ClosedJaxpr:
    inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    return inner if isinstance(inner, ClosedJaxpr) else ClosedJaxpr(inner, ())


def _evaluate(jaxpr: Jaxpr, consts: list, args: list, slices: Iterator[jax.Array]) -> list:
    """`jax.core.eval_jaxpr`, entering nested calls and answering random_bits from `slices`."""
    env: dict = {}

    def read(var):
        return var.val if isinstance(var, Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive.name == "random_bits":
            outs = [next(slices)]
        elif eqn.primitive.name in _CALLS:
            inner = _inner(eqn)
            outs = _evaluate(inner.jaxpr, inner.consts, ins, slices)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]
