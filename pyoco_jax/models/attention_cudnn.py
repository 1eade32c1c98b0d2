"""cuDNN flash attention on NVIDIA GPUs, for any lengths.

`jax.nn.dot_product_attention(implementation="cudnn")` refuses to differentiate odd lengths: its
training path counts the placeholder it passes for "no bias" as a bias, and cuDNN's bias backward needs
even lengths (a 77-token text context fails). An odd length is padded by one, and the padding masked
by cuDNN's sequence lengths; the padded query row is cut off (its cotangent is zero).
"""

import jax
import jax.numpy as jnp


def cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, *, causal: bool = False
) -> jax.Array:
    """Attention of q (B, Lq, H, D) over k, v (B, Lk, H, D), `bias` (B|1, H|1, Lq, Lk) or None.

    cuDNN aligns causal masks top-left: callers keep Lq == Lk there (attention_choice.py)."""
    batch, q_len, k_len = q.shape[0], q.shape[1], k.shape[1]
    q_pad, k_pad = q_len % 2, k_len % 2
    lengths = {}
    if q_pad or k_pad:

        def pad(x: jax.Array, amount: int) -> jax.Array:
            return jnp.pad(x, ((0, 0), (0, amount), (0, 0), (0, 0)))

        q, k, v = pad(q, q_pad), pad(k, k_pad), pad(v, k_pad)
        if bias is not None:
            bias = jnp.broadcast_to(bias, (*bias.shape[:2], q_len, k_len))
            bias = jnp.pad(bias, ((0, 0), (0, 0), (0, q_pad), (0, k_pad)))
        lengths = dict(
            query_seq_lengths=jnp.full((batch,), q_len, jnp.int32),
            key_value_seq_lengths=jnp.full((batch,), k_len, jnp.int32),
        )
    if bias is not None:
        bias = bias.astype(q.dtype)  # cuDNN takes the bias in the inputs' dtype
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, is_causal=causal, implementation="cudnn", **lengths)
    return out[:, :q_len]
