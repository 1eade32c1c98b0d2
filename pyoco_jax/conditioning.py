"""Conditioning a video U-Net on known frames and on a low-resolution clip: one mechanism for the cascades'
temporal interpolation and super-resolution stages, image-to-video and video extension.

The condition is a video of the model's size whose channels are, in order:
  given frames  the known frames (zeros elsewhere) and a mask channel (1 on given frames), when
                `condition.frames` names which frames are given;
  low-res clip  the clip downsampled by `condition.low_res_factor` (area mean) and upsampled back
                (nearest), when the factor is > 1.
Which frames are given (`condition.frames`):
  interpolation  every `interpolation_factor`-th frame (keyframes 0, k, 2k, ...; clips of (K - 1) k + 1 frames);
  first          the first `given_frames` (image-to-video with 1);
  last           the last `given_frames` (the frames a continuation starts from);
  random         each example one of the three above, so one model serves all of them.
Training noise-augments the condition (cascaded diffusion): a level sigma ~ U(0, augment_sigma_max) per
example adds sigma * N(0, I) to the given values, and the model embeds the level (`augmentation_level`), so
a later stage learns not to trust an earlier stage's errors; sampling gives `sample_augment_sigma`.
`enforce` makes a sample keep what was given: given frames are copied in, and the low-res clip replaces
the sample's own low frequencies. For pixels, that replacement alone can leave [-1, 1] (a sharp edge next to a block
that must average out), and clipping would then break it; so it alternates with clipping to [-1, 1]
(projections onto two convex sets, whose intersection holds the upsampled low-res clip), converging to a
video in range that area-downsamples to the low-res clip.
"""

import jax
import jax.numpy as jnp
import ml_collections

FRAME_MODES = ("", "interpolation", "first", "last", "random")
PROJECTION_ROUNDS = 64  # Alternating projections in `enforce`; the error at least halves in each for saturated pixels.
_SPECIFIC_MODES = ("interpolation", "first", "last")  # What `random` draws from.


def condition_channels(config: ml_collections.ConfigDict) -> int:
    """Channels of the condition `config.condition` describes (what model.condition_channels must be)."""
    condition, channels = config.condition, int(config.data.channels)
    return (channels + 1 if condition.frames else 0) + (channels if condition.low_res_factor > 1 else 0)


def is_conditioned(config: ml_collections.ConfigDict) -> bool:
    return condition_channels(config) > 0


def frame_mask(mode: str, num_frames: int, *, factor: int, given: int) -> jax.Array:
    """(F,) float mask of the given frames for one of the specific modes."""
    index = jnp.arange(num_frames)
    if mode == "interpolation":
        return (index % factor == 0).astype(jnp.float32)
    if mode == "first":
        return (index < given).astype(jnp.float32)
    if mode == "last":
        return (index >= num_frames - given).astype(jnp.float32)
    raise ValueError(f"frame mode {mode!r} is not one of {_SPECIFIC_MODES}")


def training_masks(condition: ml_collections.ConfigDict, batch: int, num_frames: int, key: jax.Array) -> jax.Array:
    """(B, F) masks of given frames: the configured mode, or for `random` each example's own draw."""
    masks = jnp.stack(
        [
            frame_mask(mode, num_frames, factor=condition.interpolation_factor, given=condition.given_frames)
            for mode in _SPECIFIC_MODES
        ]
    )
    if condition.frames == "random":
        return masks[jax.random.randint(key, (batch,), 0, len(_SPECIFIC_MODES))]
    return jnp.broadcast_to(masks[_SPECIFIC_MODES.index(condition.frames)], (batch, num_frames))


def downsample(video: jax.Array, factor: int) -> jax.Array:
    """(B, F, H, W, C) -> (B, F, H/f, W/f, C): the mean of each f x f block."""
    b, f, h, w, c = video.shape
    if h % factor or w % factor:
        raise ValueError(f"a {h}x{w} frame does not split into {factor}x{factor} blocks")
    return video.reshape(b, f, h // factor, factor, w // factor, factor, c).mean(axis=(3, 5))


def upsample(video: jax.Array, factor: int) -> jax.Array:
    """(B, F, h, w, C) -> (B, F, h f, w f, C), each pixel repeated: `downsample` undoes it exactly."""
    return jnp.repeat(jnp.repeat(video, factor, axis=2), factor, axis=3)


def augmentation_level(sigma: jax.Array) -> jax.Array:
    """The augmentation noise level as the U-Net's sinusoidal embedding takes it: 1000 sigma / (1 + sigma),
    timestep-like, 0 for clean conditions and bounded for any sigma."""
    return 1000.0 * sigma / (1.0 + sigma)


def build_condition(
    condition: ml_collections.ConfigDict,
    given: jax.Array,
    mask: jax.Array | None,
    low_res: jax.Array | None,
    sigma: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """The condition video (B, F, H, W, channels) for `given` frames (B, F, H, W, C; only masked ones are read)
    under `mask` (B, F), and/or `low_res` (B, F, H/f, W/f, C); both noised with per-example `sigma` (B,)."""
    parts = []
    scale = sigma.reshape(-1, 1, 1, 1, 1)
    noise_key, low_key = jax.random.split(key)
    if condition.frames:
        weights = mask[:, :, None, None, None]
        noisy = given + scale * jax.random.normal(noise_key, given.shape)
        parts += [noisy * weights, jnp.broadcast_to(weights, (*given.shape[:-1], 1))]
    if condition.low_res_factor > 1:
        noisy = low_res + scale * jax.random.normal(low_key, low_res.shape)
        parts.append(upsample(noisy, condition.low_res_factor))
    return jnp.concatenate(parts, axis=-1)


def training_condition(
    condition: ml_collections.ConfigDict, x0: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(condition, augmentation level) for training on clean clips `x0` (B, F, H, W, C) in the model's range."""
    batch, num_frames = x0.shape[:2]
    mask_key, sigma_key, noise_key = jax.random.split(key, 3)
    mask = training_masks(condition, batch, num_frames, mask_key) if condition.frames else None
    low_res = downsample(x0, condition.low_res_factor) if condition.low_res_factor > 1 else None
    sigma = jax.random.uniform(sigma_key, (batch,), maxval=condition.augment_sigma_max)
    return build_condition(condition, x0, mask, low_res, sigma, noise_key), augmentation_level(sigma)


def enforce(
    condition: ml_collections.ConfigDict, sample: jax.Array, given: jax.Array | None, mask: jax.Array | None,
    low_res: jax.Array | None, *, bounded: bool = True,
) -> jax.Array:  # fmt: skip
    """`sample` keeping what was given: given frames copied in, then the low-res clip's own low frequencies
    (kept in [-1, 1] for pixels; latents, `bounded` False, are unbounded and need one projection)."""
    if condition.frames:
        weights = mask[:, :, None, None, None]
        sample = weights * given + (1.0 - weights) * sample
    if condition.low_res_factor > 1:
        factor = condition.low_res_factor
        target = upsample(low_res, factor)

        def project(video: jax.Array) -> jax.Array:
            return video - upsample(downsample(video, factor), factor) + target

        if not bounded:
            return project(sample)
        in_range = lambda _, video: jnp.clip(project(video), -1.0, 1.0)
        sample = project(jax.lax.fori_loop(0, PROJECTION_ROUNDS, in_range, jnp.clip(sample, -1.0, 1.0)))
    return sample
