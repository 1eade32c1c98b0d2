"""Splash (Pallas flash) attention on TPU for any lengths: q and kv padded to its blocks, padded keys masked.

The kernel tiles q and kv into blocks, multiples of 128 (the TPU's lanes), so lengths are padded up to a
block multiple. Padded keys get segment id 1 and every query segment id 0, so no query attends them;
padded queries attend the real keys like any other row and their outputs are cut off (their cotangent is
zero, so they add nothing to the gradients).

Block sizes: per length, the largest of 512, 256, 128 whose padding is at most 1/8 more than the 128
padding (bigger blocks mean fewer grid steps and fuller MXU tiles; 600 tokens keep 128 blocks, 640 rather
than 1,024). The kernel holds a table of q-blocks x kv-blocks entries in SMEM (1 MiB per core on v4-v6),
about 3 bytes each (measured: 591 x 591 blocks of 128, Wan 14B at 720p, needed 1.08 MiB and failed to
compile; 148 x 148 blocks of 512 compile). Lengths whose table exceeds half of SMEM even with 512 blocks
are refused (`splash_blocks` returns None) and served by XLA.
"""

import functools
import math

import jax
import jax.numpy as jnp

BLOCK_SIZES = (512, 256, 128)  # largest first
LANES = 128
_PADDING_TOLERANCE = 1 / 8
_TABLE_BYTES_PER_BLOCK_PAIR = 3  # data_next (int16 past 127 blocks) + block_mask (int8)
_TABLE_BUDGET_BYTES = 512 * 1024  # half of SMEM: the rest for the kernel's other scalars


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def block_size(length: int) -> int:
    """The block for a q or kv `length`: the largest whose padding stays within the tolerance."""
    least = round_up(length, LANES)
    return next(b for b in BLOCK_SIZES if round_up(length, b) <= least * (1 + _PADDING_TOLERANCE))


def splash_blocks(q_len: int, k_len: int) -> tuple[int, int] | None:
    """(block_q, block_kv) for these lengths, or None when the kernel's block table would not fit in SMEM."""
    block_q, block_kv = block_size(q_len), block_size(k_len)
    pairs = (round_up(q_len, block_q) // block_q) * (round_up(k_len, block_kv) // block_kv)
    return (block_q, block_kv) if pairs * _TABLE_BYTES_PER_BLOCK_PAIR <= _TABLE_BUDGET_BYTES else None


@functools.cache
def _kernel(heads: int, q_len: int, k_len: int, blocks: tuple[int, int], causal_offset: int | None, interpret: bool):
    """The splash kernel for padded lengths; `causal_offset` None for full attention."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    shape = (q_len, k_len)
    head_mask = masks.FullMask(shape) if causal_offset is None else masks.CausalMask(shape, offset=causal_offset)
    block_q, block_kv = blocks
    sizes = kernel.BlockSizes(
        block_q=block_q,
        block_kv=block_kv,
        block_kv_compute=block_kv,
        block_q_dkv=block_q,
        block_kv_dkv=block_kv,
        block_kv_dkv_compute=block_kv,
        block_q_dq=block_q,
        block_kv_dq=block_kv,
    )
    # The kernel keeps its block tables as arrays: make them concrete even when first built inside a trace.
    with jax.ensure_compile_time_eval():
        return kernel.make_splash_mha(
            masks.MultiHeadMask([head_mask] * heads),
            block_sizes=sizes,
            head_shards=1,
            q_seq_shards=1,
            interpret=interpret,
        )


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False, interpret: bool = False
) -> jax.Array:
    """Attention of q (B, Lq, H, D) over k, v (B, Lk, H, D) by the splash kernel, any Lq, Lk.

    Causal masks align bottom-right like `xla_attention` (query i sees keys j <= i + Lk - Lq); callers
    keep Lq <= Lk there, so every query sees a key. Raises ValueError for lengths `splash_blocks` refuses.
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel

    q_len, k_len, heads = q.shape[1], k.shape[1], q.shape[2]
    blocks = splash_blocks(q_len, k_len)
    if blocks is None:
        raise ValueError(f"splash attention's block table does not fit in SMEM for lengths {q_len}/{k_len}")
    q_padded, k_padded = round_up(q_len, blocks[0]), round_up(k_len, blocks[1])
    splash = _kernel(heads, q_padded, k_padded, blocks, k_len - q_len if causal else None, interpret)
    segments = None
    if k_padded > k_len:
        segments = kernel.SegmentIds(
            q=jnp.zeros((q_padded,), jnp.int32), kv=(jnp.arange(k_padded) >= k_len).astype(jnp.int32)
        )

    def heads_first(x: jax.Array, length: int) -> jax.Array:
        return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0))).swapaxes(1, 2)

    q = q * (1.0 / math.sqrt(q.shape[-1]))  # the kernel does not scale the logits
    # The kernel takes one example (heads, length, head_dim); map it over the batch.
    out = jax.vmap(lambda q, k, v: splash(q, k, v, segment_ids=segments))(
        heads_first(q, q_padded), heads_first(k, k_padded), heads_first(v, k_padded)
    )
    return out.swapaxes(1, 2)[:, :q_len]
