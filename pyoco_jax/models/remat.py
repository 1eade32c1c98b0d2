"""Per-block gradient checkpointing (`model.remat`), so activation memory can be traded for compute.

none     keep every activation.
full     keep only block inputs; recompute the block in the backward pass.
dots     keep the results of matmuls (dot_general) inside a block, recompute the rest.
offload  like dots, but the kept results live in host memory (pinned_host) until the
         backward pass; on a platform without host memory kinds it behaves as dots (logged).
"""

from collections.abc import Callable

import jax
from absl import logging
from flax import nnx

REMAT_MODES = ("none", "full", "dots", "offload")
_warned: set[str] = set()


def _host_offload_supported() -> bool:
    kinds = {memory.kind for memory in jax.devices()[0].addressable_memories()}
    return "pinned_host" in kinds


def checkpoint_policy(mode: str) -> Callable | None:
    """The jax.checkpoint policy of a remat mode ("full": None, i.e. save nothing)."""
    if mode not in REMAT_MODES or mode == "none":
        raise ValueError(f"model.remat={mode!r} has no checkpoint policy; choose one of {REMAT_MODES[1:]}")
    if mode == "full":
        return None
    if mode == "offload":
        if _host_offload_supported():
            return jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host")
        if mode not in _warned:
            _warned.add(mode)
            logging.warning("model.remat='offload': no pinned_host memory on this platform; using 'dots'")
    return jax.checkpoint_policies.dots_saveable


def run_block(mode: str, module: nnx.Module, frames: int, *args):
    """Calls `module(*args, frames)`, rematerialised per `mode`."""
    if mode == "none":
        return module(*args, frames)
    call = nnx.remat(lambda m, *a: m(*a, frames), policy=checkpoint_policy(mode))
    return call(module, *args)
