"""Scaled dot-product attention behind one function, so kernels can be swapped by config.

Backends (`model.attention_backend`):
    xla     plain einsum + float32 softmax; runs everywhere (the reference).
    cudnn   `jax.nn.dot_product_attention(implementation="cudnn")`: fused kernel on NVIDIA GPUs
            (needs float16/bfloat16 inputs and head_dim a multiple of 8 up to 128).
    splash  Pallas splash (flash) attention on TPU (sequence lengths multiple of 128, no bias).
A backend that cannot run a call (wrong platform, dtype, shape, or an additive bias it does
not support) falls back to xla and logs why, once per reason, never silently.
"""

import functools
import math

import jax
import jax.numpy as jnp
from absl import logging

BACKENDS = ("xla", "cudnn", "splash")
_SPLASH_BLOCK = 128
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logging.warning(message)


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


def _cudnn_problem(q: jax.Array, k: jax.Array) -> str | None:
    if jax.default_backend() != "gpu":
        return f"the platform is {jax.default_backend()}, not gpu"
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return f"cuDNN attention needs float16/bfloat16 inputs, got {q.dtype} (set model.dtype=bfloat16)"
    if q.shape[-1] % 8 or q.shape[-1] > 128:
        return f"cuDNN attention needs head_dim a multiple of 8 up to 128, got {q.shape[-1]}"
    return None


def _splash_problem(q: jax.Array, k: jax.Array, bias: jax.Array | None) -> str | None:
    if jax.default_backend() != "tpu":
        return f"the platform is {jax.default_backend()}, not tpu"
    if bias is not None:
        return "splash attention takes no additive bias (e.g. relative frame positions)"
    if q.shape[1] % _SPLASH_BLOCK or k.shape[1] % _SPLASH_BLOCK:
        return f"splash attention needs lengths that are multiples of {_SPLASH_BLOCK}, got {q.shape[1]}/{k.shape[1]}"
    return None


@functools.cache
def _splash_kernel(num_heads: int, q_len: int, k_len: int, causal: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    head_mask = masks.CausalMask((q_len, k_len)) if causal else masks.FullMask((q_len, k_len))
    mask = masks.MultiHeadMask([head_mask] * num_heads)
    block = kernel.BlockSizes(
        block_q=_SPLASH_BLOCK,
        block_kv=_SPLASH_BLOCK,
        block_kv_compute=_SPLASH_BLOCK,
        block_q_dkv=_SPLASH_BLOCK,
        block_kv_dkv=_SPLASH_BLOCK,
        block_kv_dkv_compute=_SPLASH_BLOCK,
        block_q_dq=_SPLASH_BLOCK,
        block_kv_dq=_SPLASH_BLOCK,
    )
    return kernel.make_splash_mha(mask, block_sizes=block, head_shards=1, q_seq_shards=1)


def _splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, causal: bool) -> jax.Array:
    kernel = _splash_kernel(q.shape[2], q.shape[1], k.shape[1], causal)
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    # The kernel works on (heads, length, head_dim) for one example; map it over the batch.
    out = jax.vmap(kernel)(q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2))
    return out.swapaxes(1, 2)


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
    keys j <= i (pre-softmax mask).
    """
    if backend not in BACKENDS:
        raise ValueError(f"model.attention_backend={backend!r} is not one of {BACKENDS}")
    if backend == "cudnn":
        problem = _cudnn_problem(q, k)
        if problem is None:
            return jax.nn.dot_product_attention(q, k, v, bias=bias, is_causal=causal, implementation="cudnn")
    elif backend == "splash":
        problem = _splash_problem(q, k, bias)
        if problem is None:
            return _splash_attention(q, k, v, causal)
    else:
        return xla_attention(q, k, v, bias, causal)
    _warn_once(f"attention backend {backend!r} unavailable here ({problem}); using 'xla' instead")
    return xla_attention(q, k, v, bias, causal)
