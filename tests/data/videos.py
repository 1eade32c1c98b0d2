"""Small test videos with known content, written with PyAV.

Frame i of a "coded" video is one flat colour that encodes i (two channels in
steps of 40, so a codec error below 20 levels still decodes to the right index).
"""

import os
from fractions import Fraction

import av
import numpy as np

_STEP, _BASE, _LEVELS = 40, 20, 6  # Colour code: channel value = 20 + 40 * digit, digits base 6.
MAX_CODE = _LEVELS**2


def coded_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(count, H, W, 3) uint8; frame i is a flat colour encoding i (i < 36)."""
    if count > MAX_CODE:
        raise ValueError(f"at most {MAX_CODE} coded frames")
    index = np.arange(count)
    colours = np.stack([_BASE + _STEP * (index % _LEVELS), _BASE + _STEP * (index // _LEVELS), np.full(count, 128)], -1)
    return np.broadcast_to(colours[:, None, None, :], (count, height, width, 3)).astype(np.uint8)


def frame_codes(frames: np.ndarray) -> np.ndarray:
    """The index each frame of (F, H, W, 3) encodes, from its mean colour."""
    mean = np.asarray(frames, np.float64).mean(axis=(1, 2))
    digits = np.clip(np.round((mean[:, :2] - _BASE) / _STEP), 0, _LEVELS - 1).astype(int)
    return digits[:, 0] + _LEVELS * digits[:, 1]


def code_error(frames: np.ndarray, codes: np.ndarray) -> float:
    """Largest per-pixel difference between frames and the exact colours of `codes`."""
    height, width = frames.shape[1:3]
    expected = np.stack([coded_frames(MAX_CODE, height, width)[code] for code in codes])
    return float(np.abs(frames.astype(np.int16) - expected.astype(np.int16)).max())


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 24,
    *,
    codec: str = "libx264",
    container_format: str | None = None,
    pix_fmt: str = "yuv420p",
    gop: int = 8,
    options: dict[str, str] | None = None,
) -> None:
    """Encodes (F, H, W, 3) uint8 frames; the keyframe interval `gop` makes seeking matter."""
    with av.open(os.fspath(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.codec_context.gop_size = gop
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 24, gop: int = 8) -> None:
    """H.264, near-lossless (crf 10)."""
    write_video(path, frames, fps, codec="libx264", gop=gop, options={"crf": "10"})


def write_webm(path: str | os.PathLike, frames: np.ndarray, fps: float = 24) -> None:
    """VP9, lossless."""
    write_video(path, frames, fps, codec="libvpx-vp9", options={"lossless": "1"})


def write_avi(path: str | os.PathLike, frames: np.ndarray, fps: float = 25) -> None:
    """MPEG-4 part 2 in AVI, like UCF-101's files."""
    write_video(path, frames, fps, codec="mpeg4", options={"qscale": "2"})


def write_lossless(path: str | os.PathLike, frames: np.ndarray, fps: float = 24) -> None:
    """FFV1 RGB in Matroska: decodes to exactly the input pixels."""
    write_video(path, frames, fps, codec="ffv1", container_format="matroska", pix_fmt="bgr0")


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> None:
    """An .m4a-style MP4 with one AAC stream and no video."""
    rate = 16000
    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = np.sin(np.arange(int(seconds * rate)) * 0.05).astype(np.float32)
        for start in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def truncate(path: str | os.PathLike, fraction: float) -> None:
    """Keeps the first `fraction` of the file's bytes (a cut-off download)."""
    data = open(path, "rb").read()
    with open(path, "wb") as file:
        file.write(data[: int(len(data) * fraction)])


# A folder where every bad file is followed by a good one: each epoch then skips each bad file exactly once.
GOOD_FRAMES = 12
BAD_KINDS = {  # name -> the reason the source must report
    "corrupt.mp4": "InvalidDataError",
    "truncated.mp4": "no streams at all",
    "too_short.mp4": "too short",
    "empty.mp4": "empty file",
    "missing.mp4": "FileNotFoundError",
    "audio_only.m4a": "no video stream",
}


def write_mixed_folder(folder: str | os.PathLike, *, seed: int = 0) -> list[str]:
    """good_0, corrupt, good_1, truncated, ... (12 rows, metadata.csv); returns the row paths in order.

    good_k.mp4 has GOOD_FRAMES frames coded 4k, 4k + 1, ...; labels are the row numbers mod 3.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for k, bad in enumerate(BAD_KINDS):
        names += [f"good_{k}.mp4", bad]
        path = os.path.join(folder, bad)
        if bad == "corrupt.mp4":
            open(path, "wb").write(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        elif bad == "truncated.mp4":
            write_mp4(path, coded_frames(GOOD_FRAMES, 48, 64))
            truncate(path, 0.6)
        elif bad == "too_short.mp4":
            write_mp4(path, coded_frames(2, 48, 64))
        elif bad == "empty.mp4":
            open(path, "wb").close()
        elif bad == "audio_only.m4a":
            write_audio_only(path)
        write_mp4(os.path.join(folder, f"good_{k}.mp4"), coded_frames(36, 48, 64)[4 * k : 4 * k + GOOD_FRAMES])
    rows = "".join(f"{name},caption {i},{i % 3}\n" for i, name in enumerate(names))
    with open(os.path.join(folder, "metadata.csv"), "w") as file:
        file.write("path,caption,label\n" + rows)
    return names


CAPTIONS = ["a cat sitting on a windowsill", "two dogs playing fetch in a park", "clouds moving over mountains"]


def write_captioned_videos(folder, captions: list[str] = CAPTIONS) -> None:
    """A video folder of one 12-frame 24x32 clip per caption (each rolled differently) with metadata.csv."""
    os.makedirs(folder)
    rows = ["path,caption"]
    for i, caption in enumerate(captions):
        write_mp4(os.path.join(folder, f"clip{i}.mp4"), np.roll(coded_frames(12, 24, 32), i, axis=0), fps=8)
        rows.append(f"clip{i}.mp4,{caption}")
    with open(os.path.join(folder, "metadata.csv"), "w") as file:
        file.write("\n".join(rows) + "\n")
