"""3D rotary position embedding of Wan: head_dim split into frame, height and width parts.

Each part rotates its channel pairs (2i, 2i + 1) by position * theta^(-2i / part) along its own axis.
Height and width get 2 * (head_dim // 6) channels each, frames the rest (44/42/42 for head_dim 128),
as diffusers' `WanRotaryPosEmbed`. Angles are computed in float64 with numpy while tracing (the grid is
static), then rounded to float32 as diffusers does.
"""

import jax
import jax.numpy as jnp
import numpy as np

THETA = 10000.0


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the (frame, height, width) parts of a head."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _angles(positions: int, dim: int) -> np.ndarray:
    """(positions, dim // 2) float64 angles of one axis."""
    inverse = 1.0 / THETA ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    return np.outer(np.arange(positions, dtype=np.float64), inverse)


def rope_tables(grid: tuple[int, int, int], head_dim: int) -> tuple[jax.Array, jax.Array]:
    """(cos, sin), each (F * H * W, head_dim // 2) float32, for tokens in row-major (frame, row, column) order.

    Only the per-axis tables are constants; the per-token ones are broadcast in the program.
    """
    frames, rows, cols = grid
    t_dim, h_dim, w_dim = axis_dims(head_dim)
    per_axis = (
        _angles(frames, t_dim)[:, None, None],
        _angles(rows, h_dim)[None, :, None],
        _angles(cols, w_dim)[None, None, :],
    )

    def table(fn) -> jax.Array:
        parts = [jnp.broadcast_to(fn(a).astype(np.float32), (*grid, a.shape[-1])) for a in per_axis]
        return jnp.concatenate(parts, axis=-1).reshape(frames * rows * cols, head_dim // 2)

    return table(np.cos), table(np.sin)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates x (B, L, heads, head_dim) by per-token angles (L, head_dim // 2), in float32; keeps x's dtype."""
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)
