"""Fused attention kernels on sharded inputs: each device runs the kernel on its own shard, inside `shard_map`.

A Pallas or cuDNN kernel is opaque to XLA's partitioner, which would hand it whole arrays (gathering q, k,
v on every device). Attention is independent per example and per head, so the kernel runs inside
`jax.shard_map` with the batch dim split over the target's batch axes and the heads over its head axes
(attention_target.py): no communication at all when the inputs already lie that way.

Called inside someone else's `shard_map` (e.g. context parallelism, after an all-to-all made the heads
local), the axes it made manual are skipped: the arrays are already this device's, and only axes still
automatic (if any) get a shard_map of their own. Without a mesh the kernel runs on the arrays as they are.
"""

import math
from collections.abc import Callable, Sequence

import jax
from absl import logging
from jax.sharding import AxisType, PartitionSpec

from pyoco_jax.models.attention_target import current_mesh, current_target

_logged: set[tuple] = set()


def _split(wanted: Sequence[str], free: Sequence[str], mesh_shape, size: int) -> tuple[str, ...]:
    """The axes of `wanted` that are free and, taken in order, keep dividing a dim of `size`."""
    chosen: list[str] = []
    for axis in wanted:
        if axis not in free:
            continue
        if size % (math.prod(mesh_shape[a] for a in chosen) * mesh_shape[axis]):
            if (axis, size) not in _logged:
                _logged.add((axis, size))
                logging.info(
                    "attention: a dim of size %d does not split over mesh axis %s (%d); each of its devices "
                    "computes that dim whole",
                    size,
                    axis,
                    mesh_shape[axis],
                )
            continue
        chosen.append(axis)
    return tuple(chosen)


def varies_over_manual_axes(x: jax.Array) -> bool:
    """Whether `x` is typed as varying over manual mesh axes: inside a `shard_map(check_vma=True)`."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # JAX >= 0.10; `vma` before
    return bool(getattr(manual, "varying", None) or getattr(aval, "vma", None))


def run_sharded(
    kernel: Callable[..., jax.Array], q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None
) -> jax.Array:
    """`kernel(q, k, v[, bias])` per device: q (B, Lq, H, D), k, v (B, Lk, H, D), bias (B|1, H|1, Lq, Lk)."""
    operands = (q, k, v) if bias is None else (q, k, v, bias)
    mesh = current_mesh()
    if mesh is None:
        return kernel(*operands)
    types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    free = [name for name in mesh.axis_names if types[name] != AxisType.Manual]
    if not free:
        return kernel(*operands)
    target = current_target()
    batch = _split(target.batch_axes, free, mesh.shape, q.shape[0]) or None
    # An axis splits one dim at most: the rules can put one on both (e.g. fsdp on rows and on heads).
    heads = _split(target.head_axes, [a for a in free if a not in (batch or ())], mesh.shape, q.shape[2]) or None
    specs = (PartitionSpec(batch, None, heads, None),) * 3
    if bias is not None:
        specs += (PartitionSpec(batch if bias.shape[0] > 1 else None, heads if bias.shape[1] > 1 else None),)
    return jax.shard_map(
        kernel, mesh=mesh, in_specs=specs, out_specs=specs[0], axis_names=frozenset(free), check_vma=False
    )(*operands)
