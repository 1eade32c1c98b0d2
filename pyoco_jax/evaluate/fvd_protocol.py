"""Named, fixed FVD protocols: FVD numbers compare only when clip count, clip length and preprocessing match.

A protocol's name is its definition: `fvd<N>_<F>f` takes N real and N generated clips of F
consecutive frames. `fvd2048_16f` is StyleGAN-V's protocol: 2048 real and 2048 generated clips of 16
consecutive frames, resized to 224x224, values in [-1, 1], the 400 Kinetics logits of I3D as features.
Every other name follows the same rules with its own N and F (F must divide 16), so two numbers compare
exactly when their protocol names match, and never with `fvd2048_16f`'s otherwise. `NAMED_PROTOCOLS`
are the ones documented and measured (256 clips for a CPU; 4 and 8 frames for short clips). Below a few
hundred clips the 400x400 covariances are singular and the bias is large: such counts (e.g. `fvd16_4f`)
only check that the pipeline runs.

Short clips: I3D's total temporal stride is 8, so 16 frames leave 2 temporal positions for the
final 2x7x7 average pool that the Kinetics-400 model was trained with. 8 frames leave 1, which that
VALID pool cannot take (and a port that pads it would feed the logits an input the model never saw).
So an 8-frame protocol repeats every frame twice (f0 f0 f1 f1 ... f7 f7): the network sees its
trained 16-frame length, the clip keeps its order and duration, and real and generated clips go
through the same rule, so their distance stays meaningful. 4-frame clips repeat every frame 4 times.

Resizing is bilinear with half-pixel centres and no antialiasing (jax.image.resize, method "linear",
antialias=False), the same as PyTorch's F.interpolate(mode="bilinear", align_corners=False).
"""

import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from pyoco_jax.errors import UserError

I3D_FRAMES = 16
I3D_SIZE = 224
FLOAT_RANGE_SLACK = 1e-3
_NAME = re.compile(r"fvd(\d+)_(\d+)f")


@dataclass(frozen=True)
class FVDProtocol:
    """How many clips of how many frames, and how they become I3D inputs."""

    name: str
    num_clips: int  # real clips, and as many generated ones
    num_frames: int  # consecutive frames per clip, as given to `check_clips`
    frame_repeat: int = 1  # each frame is fed this many times, so I3D always sees I3D_FRAMES frames
    size: int = I3D_SIZE
    feature: str = "i3d_kinetics400_logits"
    feature_dim: int = 400

    def __post_init__(self) -> None:
        if self.num_frames * self.frame_repeat != I3D_FRAMES:
            raise ValueError(f"protocol {self.name}: {self.num_frames} frames x {self.frame_repeat} != {I3D_FRAMES}")


NAMED_PROTOCOLS = ("fvd2048_16f", "fvd256_16f", "fvd256_8f", "fvd256_4f")


def get_protocol(name: str) -> FVDProtocol:
    """The protocol `fvd<N>_<F>f` (N >= 2 clips of F frames, F dividing 16), or a UserError saying what fits."""
    match = _NAME.fullmatch(name)
    clips, frames = (int(match[1]), int(match[2])) if match else (0, 0)
    if clips < 2 or frames < 1 or I3D_FRAMES % frames:
        raise UserError(
            f"unknown FVD protocol {name!r}: name it fvd<clips>_<frames>f with at least 2 clips and frames "
            f"dividing {I3D_FRAMES}, e.g. one of {NAMED_PROTOCOLS}"
        )
    return FVDProtocol(name, num_clips=clips, num_frames=frames, frame_repeat=I3D_FRAMES // frames)


def check_clip_shape(protocol: FVDProtocol, videos: np.ndarray) -> None:
    """Checks one batch's layout, frame count, dtype and value range (any number of clips)."""
    where = f"FVD protocol {protocol.name}"
    if videos.ndim != 5:
        raise UserError(f"{where}: videos must be (clips, frames, height, width, 3), got shape {videos.shape}")
    if videos.shape[-1] != 3:
        raise UserError(
            f"{where}: videos must have 3 RGB channels last, got {videos.shape[-1]} (shape {videos.shape}); "
            "convert grey to RGB or move channels to the last axis"
        )
    if videos.shape[1] != protocol.num_frames:
        raise UserError(
            f"{where}: clips must have exactly {protocol.num_frames} consecutive frames, got {videos.shape[1]}; "
            f"cut them (e.g. videos[:, :{protocol.num_frames}]) or pick a protocol for {videos.shape[1]}-frame clips"
        )
    if videos.dtype == np.uint8:
        return
    if not np.issubdtype(videos.dtype, np.floating):
        raise UserError(f"{where}: videos must be uint8 in [0, 255] or float in [-1, 1], got dtype {videos.dtype}")
    if videos.size and (videos.min() < -1 - FLOAT_RANGE_SLACK or videos.max() > 1 + FLOAT_RANGE_SLACK):
        raise UserError(
            f"{where}: float videos must be in [-1, 1], got [{videos.min():.3g}, {videos.max():.3g}]; "
            "map [0, 1] floats with 2 * x - 1, or pass uint8"
        )


def check_clips(protocol: FVDProtocol, videos: np.ndarray) -> None:
    """Checks a whole set of clips: the layout of `check_clip_shape` and at least `protocol.num_clips` clips."""
    check_clip_shape(protocol, videos)
    if videos.shape[0] < protocol.num_clips:
        raise UserError(
            f"FVD protocol {protocol.name} needs {protocol.num_clips} clips, got {videos.shape[0]}; "
            f"provide more clips or pick a protocol with fewer clips (fvd<clips>_{protocol.num_frames}f)"
        )


def prepare_clips(protocol: FVDProtocol, videos: np.ndarray) -> np.ndarray:
    """A batch of clips -> float32 (N, 16, 224, 224, 3) I3D inputs in [-1, 1] (frames repeated, bilinear resize)."""
    videos = np.asarray(videos)
    check_clip_shape(protocol, videos)
    if videos.dtype == np.uint8:
        scaled = jnp.asarray(videos, jnp.float32) / 127.5 - 1.0
    else:
        scaled = jnp.asarray(videos, jnp.float32)
    clips, frames, _, _, channels = scaled.shape
    resized = jax.image.resize(
        scaled, (clips, frames, protocol.size, protocol.size, channels), method="linear", antialias=False
    )
    repeated = jnp.repeat(resized, protocol.frame_repeat, axis=1)
    return np.asarray(jnp.clip(repeated, -1.0, 1.0), dtype=np.float32)
