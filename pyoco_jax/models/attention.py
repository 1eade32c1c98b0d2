"""Scaled dot-product attention behind one function; the kernel is chosen per call.

`attention(q, k, v, bias=, causal=, backend=)` picks a kernel from `backend` (`model.attention_backend`:
auto | xla | cudnn | splash), the platform being compiled for and the shapes; attention_choice.py holds
the rules and their reasons (auto: splash on TPU, cuDNN flash on GPU, XLA for short sequences, an
additive bias, or a platform without a fused kernel). The target platform and the mesh layout come from
attention_target.py, so an AOT plan for TPU traced on a CPU host chooses splash. Fused kernels run
per device inside `shard_map` (attention_sharding.py), also when called inside another `shard_map`.

Each distinct choice is logged once (info; a warning when an explicit cudnn/splash falls back to xla),
and `record_kernel_choices()` counts the choices made while a step is traced, for the plan's report.
"""

import collections
import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from absl import logging

from pyoco_jax.models.attention_choice import BACKENDS, KernelChoice, choose_kernel
from pyoco_jax.models.attention_cudnn import cudnn_attention
from pyoco_jax.models.attention_sharding import run_sharded, varies_over_manual_axes
from pyoco_jax.models.attention_splash import splash_attention
from pyoco_jax.models.attention_target import current_mesh, current_target, target_platform

__all__ = ["BACKENDS", "attention", "record_kernel_choices", "xla_attention"]

_logged: set[tuple[str, KernelChoice]] = set()
_RECORD: contextvars.ContextVar[collections.Counter | None] = contextvars.ContextVar("attention_choices", default=None)


@contextlib.contextmanager
def record_kernel_choices() -> Iterator[collections.Counter]:
    """Counts the KernelChoice of every attention call traced inside (a scanned layer's body counts once)."""
    counts: collections.Counter = collections.Counter()
    token = _RECORD.set(counts)
    try:
        yield counts
    finally:
        _RECORD.reset(token)


def _note(backend: str, choice: KernelChoice) -> None:
    counts = _RECORD.get()
    if counts is not None:
        counts[choice] += 1
    if (backend, choice) in _logged:
        return
    _logged.add((backend, choice))
    if backend not in ("auto", choice.kernel):
        logging.warning("attention: %s; using 'xla' instead", choice.reason)
    else:
        logging.info("attention (backend %r): %s kernel, %s", backend, choice.kernel, choice.reason)


def xla_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, causal: bool = False
) -> jax.Array:
    """Reference attention on (batch, length, heads, head_dim) arrays; softmax in float32.

    The logits matmul runs in the inputs' dtype and is cast after: its backward then stays in
    that dtype too (asking the einsum for float32 output would make both gradient matmuls float32).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if causal:
        q_len, k_len = q.shape[1], k.shape[1]
        mask = jnp.tril(jnp.ones((q_len, k_len), dtype=bool), k=k_len - q_len)
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    bias: jax.Array | None = None,
    causal: bool = False,
    backend: str = "xla",
) -> jax.Array:
    """Multi-head attention of q (B, Lq, H, D) over k, v (B, Lk, H, D) -> (B, Lq, H, D).

    `bias` broadcasts to (B, H, Lq, Lk) and is added to the logits; `causal` lets query i see
    keys j <= i + Lk - Lq (pre-softmax mask, bottom-right aligned).
    """
    choice = choose_kernel(
        backend,
        target_platform(),
        q.shape,
        k.shape,
        q.dtype,
        bias=bias is not None,
        causal=causal,
        typed_manual=varies_over_manual_axes(q),
        unplaced_devices=0 if current_mesh() is not None else jax.device_count(),
    )
    _note(backend, choice)
    if choice.kernel == "splash":
        return run_sharded(
            functools.partial(splash_attention, causal=causal, interpret=current_target().interpret), q, k, v
        )
    if choice.kernel == "cudnn":
        if bias is not None:
            bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
        return run_sharded(functools.partial(cudnn_attention, causal=causal), q, k, v, bias)
    return xla_attention(q, k, v, bias, causal)
