"""What attention's fused kernels are compiled for: the platform, the mesh, and how q/k/v lie on it.

Choosing splash or cuDNN needs the platform the step is *compiled for*, which need not be the one this
process runs on: an AOT plan for a TPU slice is traced on a CPU host. The mesh knows it (a mesh over TPU
devices, real or libtpu's abstract ones, says tpu), so the platform is, in this order:
    1. `kernel_target(platform=...)`, e.g. tests forcing tpu to run splash in Pallas interpret mode on CPU;
    2. the platform of the mesh in context: JAX's (`jax.set_mesh`, or the one inside `jax.shard_map`), else
       the one given to `kernel_target(mesh=...)`;
    3. `jax.default_backend()`.
The layout (which mesh axes split the batch and the heads dims of q/k/v) is set by whoever built the mesh
(the train step or the plan, from pyoco_jax/parallel.py), so model code names no mesh axis.

The target is read while a function is traced: enter `kernel_target` around the trace (or inside the
jitted function). jit's cache does not see it, so a function traced under one target keeps that choice.
"""

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

import jax
from jax.sharding import AbstractMesh, Mesh

PLATFORMS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class KernelTarget:
    """Where attention kernels run. Empty fields defer to the mesh in context and the running backend."""

    platform: str | None = None  # one of PLATFORMS; None: the mesh's, else jax.default_backend()
    mesh: Mesh | None = None  # used when no JAX mesh is in context
    batch_axes: tuple[str, ...] = ()  # mesh axes that split q/k/v's batch dim (B, or B*F for per-frame attention)
    head_axes: tuple[str, ...] = ()  # mesh axes that split the heads dim
    interpret: bool = False  # run Pallas kernels in interpret mode (splash on CPU, for tests)


_DEFAULT = KernelTarget()
_TARGET: contextvars.ContextVar[KernelTarget] = contextvars.ContextVar("attention_kernel_target", default=_DEFAULT)


@contextlib.contextmanager
def kernel_target(**fields) -> Iterator[KernelTarget]:
    """Attention traced inside uses `fields` of `KernelTarget`; the fields not given keep their outer values."""
    platform = fields.get("platform")
    if platform is not None and platform not in PLATFORMS:
        raise ValueError(f"attention kernel platform {platform!r} is not one of {PLATFORMS}")
    token = _TARGET.set(dataclasses.replace(_TARGET.get(), **fields))
    try:
        yield _TARGET.get()
    finally:
        _TARGET.reset(token)


def current_target() -> KernelTarget:
    return _TARGET.get()


def current_mesh() -> Mesh | AbstractMesh | None:
    """JAX's mesh in context (inside `jax.shard_map`: with its manual axes), else the target's, else None."""
    context = jax.sharding.get_abstract_mesh()
    if not context.empty:
        return context
    return _TARGET.get().mesh


def target_platform() -> str:
    """The platform the attention being traced is compiled for (see the module docstring for the order)."""
    target = _TARGET.get()
    if target.platform is not None:
        return target.platform
    mesh = current_mesh()
    device = None if mesh is None else mesh.abstract_mesh.abstract_device
    return jax.default_backend() if device is None else device.platform
