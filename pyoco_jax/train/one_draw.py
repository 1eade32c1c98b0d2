"""Run a function with all its random bits taken from one threefry stream, drawn in a few kernels.

A model's initialisation draws one threefry kernel per parameter, and compiling hundreds of those is
what makes a fresh state slow to compile (`python -m benchmarks.init_compile`). `one_draw(fn, seed)`
traces `fn`, lays the bits every `random_bits` asks for end to end in one stream per bit width, and hands
each its slice, in trace order. The transforms after the bits (truncated normal, fan-in scale) are
untouched, so every parameter keeps its distribution; only the stream changes. Draws inside control
flow (scan, cond) keep their own kernels.

Threefry is counter-based: element n of a stream is threefry(key, n), so any stretch of it can be
computed on its own. Replicated, the stream is drawn in chunks of up to `CHUNK` elements, one kernel each,
which bounds the memory the draw needs beside the state. A sharded output would gather and scatter a
chunk, so with `sharded=True` each draw computes its own stretch where it lies instead, elementwise and
partitioned like its output: one kernel per draw again, with the same values, so a seed gives the same
state on every mesh.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal
from jax.extend.random import threefry2x32_p

_CALLS = ("jit", "pjit", "closed_call")


# Elements per kernel of the replicated draw: its temporary memory is a few times this many 4-byte words.
CHUNK = 2**26


def one_draw(fn: Callable[[], Any], seed: int, sharded: bool = False) -> Any:
    """`fn()`, with the random bits it draws sliced from one threefry stream per bit width, keyed by `seed`.

    `sharded`: compute each draw's stretch on its own (for outputs laid out over a mesh); same values.
    """
    closed, out_tree = jax.make_jaxpr(fn, return_shape=True)()
    requests = list(_bit_requests(closed.jaxpr))
    widths = sorted({width for _, width in requests})
    keys = dict(zip(widths, jax.random.split(jax.random.key(seed, impl="threefry2x32"), len(widths)), strict=False))
    slices = iter(_slices(requests, keys, sharded))
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


def _slices(requests: list[tuple[tuple[int, ...], int]], keys: dict[int, jax.Array], sharded: bool) -> list:
    """Each request's bits: its stretch of its width's stream, from a shared chunk or (sharded) on its own."""
    starts, ends = [], {}
    for shape, width in requests:
        starts.append(ends.get(width, 0))
        ends[width] = starts[-1] + math.prod(shape)
    if sharded:
        return [_counter_bits(keys[w], start, shape, w) for (shape, w), start in zip(requests, starts, strict=True)]
    slices: list = [None] * len(requests)
    for chunk in _chunks(requests):
        width = requests[chunk[0]][1]
        first, last = starts[chunk[0]], starts[chunk[-1]] + math.prod(requests[chunk[-1]][0])
        bits = _counter_bits(keys[width], first, (last - first,), width)
        for i in chunk:
            shape, offset = requests[i][0], starts[i] - first
            slices[i] = jax.lax.slice_in_dim(bits, offset, offset + math.prod(shape)).reshape(shape)
    return slices


def _chunks(requests: list[tuple[tuple[int, ...], int]]) -> list[list[int]]:
    """Indices of consecutive requests of one width, up to `CHUNK` elements together (or one larger request)."""
    chunks: list[list[int]] = []
    current: dict[int, tuple[list[int], int]] = {}  # width -> (indices, elements)
    for i, (shape, width) in enumerate(requests):
        indices, elements = current.get(width, ([], 0))
        if indices and elements + math.prod(shape) > CHUNK:
            chunks.append(indices)
            indices, elements = [], 0
        current[width] = ([*indices, i], elements + math.prod(shape))
    return chunks + [indices for indices, _ in current.values()]


def _counter_bits(key: jax.Array, start: int, shape: tuple[int, ...], width: int) -> jax.Array:
    """Elements start.. of the stream as `shape`: threefry of `start` + the row-major index, a 64-bit counter
    in two 32-bit words; what `jax.random.bits(key, (total,))` computes (its partitionable threefry)."""
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
    return (bits1 ^ bits2).astype(jnp.dtype(f"uint{width}"))


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
