"""Writing and reading clips (uint8, (F, H, W, 3)) with PyAV alone: no system ffmpeg, no Pillow.

MP4 is H.264 in yuv420p, which players everywhere accept but which needs even
sides: odd heights or widths are padded by one row/column repeating the edge
pixels (so a read-back clip may be one pixel larger there). GIFs use one
adaptive 256-colour palette shared by all frames, so colours do not flicker.
Writers take any `etils.epath` path (local or gs://): PyAV encodes into a
local temporary file, which is then copied to the destination.
"""

import contextlib
import math
import os
import pathlib
import tempfile
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from etils import epath


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (F, H, W, 3) with F >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 (convert with np.clip(x * 255, 0, 255).astype(np.uint8)), got {frames.dtype}"
        )
    return frames


def _rate(fps: float) -> Fraction:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return Fraction(fps).limit_denominator(1001)


@contextlib.contextmanager
def _local_file(path: str | os.PathLike) -> Iterator[str]:
    """A local path to write to; its bytes go to `path` (through epath) once the block ends without error.

    Every destination, local ones included, takes this one route, so a local run exercises the gs:// one.
    """
    destination = epath.Path(path)
    with tempfile.TemporaryDirectory(prefix="pyoco_jax_video_") as tmp:
        local = pathlib.Path(tmp) / destination.name
        yield str(local)
        destination.write_bytes(local.read_bytes())


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18) -> None:
    """Writes an H.264 (libx264, yuv420p) MP4; `crf` trades size for quality (0 lossless luma, 18 near-transparent)."""
    frames = _check_frames(frames)
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with _local_file(path) as local, av.open(local, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_rate(fps), options={"crf": str(crf)})
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Writes a looping GIF (frame delays are whole centiseconds, as the format requires)."""
    frames = _check_frames(frames)
    indices, palette = _palettize(frames)
    argb = np.zeros((256, 4), np.uint8)
    argb[:, 0] = 255
    argb[: len(palette), 1:] = palette
    centiseconds = 100 / float(_rate(fps))
    with _local_file(path) as local, av.open(local, mode="w", format="gif") as container:
        stream = container.add_stream("gif", rate=_rate(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "pal8"
        stream.codec_context.time_base = Fraction(1, 100)
        for i, image in enumerate(indices):
            frame = av.VideoFrame.from_ndarray((image, argb), format="pal8")
            frame.pts = round(i * centiseconds)
            frame.time_base = Fraction(1, 100)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _palettize(frames: np.ndarray, bits: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Maps frames to indices into <= 256 colours: the most used `bits`-per-channel bins, by their mean colour."""
    shift = 8 - bits
    coarse = (frames >> shift).astype(np.int64)
    bins = (coarse[..., 0] << (2 * bits)) | (coarse[..., 1] << bits) | coarse[..., 2]
    flat_bins, flat_rgb = bins.reshape(-1), frames.reshape(-1, 3).astype(np.float64)
    counts = np.bincount(flat_bins, minlength=1 << (3 * bits))
    used = np.flatnonzero(counts)
    sums = np.stack([np.bincount(flat_bins, weights=flat_rgb[:, c], minlength=counts.size) for c in range(3)], -1)
    means = sums[used] / counts[used, None]
    chosen = np.argsort(-counts[used], kind="stable")[:256]
    palette = means[chosen]
    lookup = np.zeros(counts.size, np.uint8)
    for begin in range(0, used.size, 4096):  # Nearest palette colour for every used bin, in chunks.
        block = means[begin : begin + 4096]
        distance = ((block[:, None, :] - palette[None]) ** 2).sum(-1)
        lookup[used[begin : begin + 4096]] = np.argmin(distance, axis=1)
    return lookup[bins], np.round(palette).astype(np.uint8)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decodes every frame of the first video stream: (uint8 (F, H, W, 3), frames per second)."""
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path} has a video stream without decodable frames")
    return np.stack(frames), float(rate) if rate else 0.0


def video_grid(videos: np.ndarray, cols: int, *, padding: int = 1, fill: int = 0) -> np.ndarray:
    """Tiles N clips (N, F, H, W, C) row-major into one clip (F, H', W', C), `padding` pixels apart."""
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"videos must be (N, F, H, W, C), got shape {videos.shape}")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    count, num_frames, height, width, channels = videos.shape
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    grid = np.full(
        (num_frames, rows * (height + padding) - padding, cols * (width + padding) - padding, channels),
        fill,
        videos.dtype,
    )
    for i in range(count):
        top, left = (i // cols) * (height + padding), (i % cols) * (width + padding)
        grid[:, top : top + height, left : left + width] = videos[i]
    return grid
