"""Flicker: how much a reconstruction's frame-to-frame change departs from the input's.

    flicker(x_hat, x) = mean over clips b, frames f = 0..F-2, pixels and channels of
                        | (x_hat[b, f+1] - x_hat[b, f]) - (x[b, f+1] - x[b, f]) |

A per-frame VAE decoder "dithers": its error changes from frame to frame even where the input
does not. This metric ignores errors that stay the same across frames (a constant offset, a
static blur) and counts only those that change, in the units of the inputs (e.g. [-1, 1] pixels).
"""

import jax
import jax.numpy as jnp


def frame_differences(video: jax.Array, frame_axis: int = 1) -> jax.Array:
    """x[f+1] - x[f] along `frame_axis` (one frame fewer), in float32."""
    video = jnp.asarray(video, jnp.float32)
    count = video.shape[frame_axis]
    return jax.lax.slice_in_dim(video, 1, count, axis=frame_axis) - jax.lax.slice_in_dim(
        video, 0, count - 1, axis=frame_axis
    )


def flicker(reconstruction: jax.Array, target: jax.Array, frame_axis: int = 1) -> jax.Array:
    """The flicker of `reconstruction` against `target`, both (B, F, H, W, C) by default; a float32 scalar."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {reconstruction.shape} and target {target.shape} differ in shape")
    if reconstruction.ndim < 2 or reconstruction.shape[frame_axis] < 2:
        raise ValueError(f"flicker needs at least 2 frames along axis {frame_axis}, got shape {reconstruction.shape}")
    gap = frame_differences(reconstruction, frame_axis) - frame_differences(target, frame_axis)
    return jnp.mean(jnp.abs(gap))
