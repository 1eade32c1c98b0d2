"""Decoding one clip from an encoded video with PyAV: seek near it, decode only up to its last frame.

Memory stays bounded for any file length: besides the clip's converted frames
it holds one decoded frame (the candidate for the next output time), never the
whole video. Colour conversion and resizing run in libswscale, only for frames
the clip uses.
Output frame k is the frame on screen at the clip's time k (the nearest frame of
a constant-rate video), so variable frame rates and dropped frames still give
frames at the right times.
"""

import dataclasses
import io
import os

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pyoco_jax.data.clip_sampling import ClipDraws, ClipSpec, CropBox, VideoInfo, clip_times, crop_box

Media = str | os.PathLike | bytes


class VideoDecodeError(ValueError):
    """A file that cannot give the requested clip (no video stream, truncated, unknown length...)."""


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    fps: float  # Frame rate of the clip as sampled.
    first_frame: int  # Native index of the first frame (for a constant-rate video).
    frames_decoded: int  # Frames the decoder produced to get the clip (seeking keeps this small).


def probe_video(media: Media) -> VideoInfo:
    """Size, frame rate and length from the container header, decoding nothing: what bucket assignment needs."""
    if isinstance(media, bytes) and not media:
        raise VideoDecodeError("empty file (0 bytes)")
    with _open(media) as container:
        stream = _video_stream(container)
        rate = _frame_rate(stream)
        return VideoInfo(stream.width, stream.height, rate, _frame_count(container, stream, rate))


class _SeekMissed(Exception):
    """The demuxer landed after the clip's first frame (or lost timestamps): decode from the start instead."""


class _EndedEarly(Exception):
    """The stream ended before the clip's last frame; `frames` is how many it really has."""

    def __init__(self, frames: int, clip_end: float):
        super().__init__(frames, clip_end)
        self.frames, self.clip_end = frames, clip_end


def decode_clip(
    media: Media,
    spec: ClipSpec,
    draws: ClipDraws | None = None,
    *,
    start: float = 0.0,
    end: float | None = None,
    threads: int = 0,
) -> DecodedClip:
    """The clip of `media` (a path or the file's bytes) that `spec` and `draws` select within [start, end) s.

    `draws` fixes the random choices (default: the centre of each range). `threads`
    is the decoder's thread count (0: FFmpeg picks). Raises `VideoDecodeError` /
    `VideoTooShortError` / PyAV or OS errors for bad files.
    """
    draws = draws or ClipDraws()
    if isinstance(media, bytes) and not media:
        raise VideoDecodeError("empty file (0 bytes)")
    frame_count = None  # From the header first; a header that over-counts (a cut-off file) gets one more try.
    while True:
        try:
            try:
                return _decode(media, spec, draws, start, end, threads, frame_count, seek=True)
            except _SeekMissed:
                return _decode(media, spec, draws, start, end, threads, frame_count, seek=False)
        except _EndedEarly as early:
            if early.frames == 0:
                raise VideoDecodeError("the video stream has no decodable frames") from None
            if frame_count is not None:
                raise VideoDecodeError(
                    f"truncated: the stream ends after {early.frames} frames, before the clip's end at "
                    f"{early.clip_end:.2f} s"
                ) from None
            frame_count = early.frames


def _open(media: Media) -> av.container.InputContainer:
    return av.open(io.BytesIO(media) if isinstance(media, bytes) else os.fspath(media), metadata_errors="ignore")


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams:
        raise VideoDecodeError("no streams at all (a truncated file, or not a video)")
    if not container.streams.video:
        kinds = ", ".join(sorted({stream.type for stream in container.streams}))
        raise VideoDecodeError(f"no video stream (streams: {kinds})")
    return container.streams.video[0]


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoDecodeError("the video stream has no frame rate")
    return float(rate)


def _frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream, rate: float) -> int:
    """Frames in the stream, from the header or else the duration (decoding corrects an over-count)."""
    if stream.frames > 0:
        return int(stream.frames)
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        raise VideoDecodeError("the video has neither a frame count nor a duration")
    return int(round(seconds * rate))


class _Frames:
    """The clip's output frames, converted as they are chosen (a frame shown twice is converted once).

    One reformatter serves the whole clip: it keeps its scaler context, which a fresh one per frame
    would rebuild (with its thread pool) at ~10x the cost of the conversion itself.
    """

    def __init__(self, spec: ClipSpec, draws: ClipDraws):
        self.spec, self.draws = spec, draws
        self.frames: list[np.ndarray] = []
        self._reformatter = VideoReformatter()
        self._box: CropBox | None = None
        self._source: av.VideoFrame | None = None
        self._pixels: np.ndarray | None = None

    @property
    def full(self) -> bool:
        return len(self.frames) == self.spec.num_frames

    def add(self, frame: av.VideoFrame) -> None:
        if frame is not self._source:
            self._box = self._box or crop_box(self.spec, self.draws, frame.height, frame.width)
            self._source = frame
            self._pixels = _pixels(self._reformatter, frame, self.spec, self._box)
        self.frames.append(self._pixels)


def _decode(
    media: Media,
    spec: ClipSpec,
    draws: ClipDraws,
    start: float,
    end: float | None,
    threads: int,
    frame_count: int | None,
    *,
    seek: bool,
) -> DecodedClip:
    with _open(media) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        rate = _frame_rate(stream)
        count = frame_count if frame_count is not None else _frame_count(container, stream, rate)
        plan = clip_times(spec, draws, rate, count, start=start, end=end)
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        tolerance = 0.5 / rate  # Half a native frame: picks the nearest frame of a constant-rate video.
        times = plan.times
        seek = seek and times[0] > tolerance
        if seek:
            container.seek(int((times[0] + origin) / stream.time_base), stream=stream)  # Keyframe at or before.
        out = _Frames(spec, draws)
        held, held_time, decoded = None, 0.0, 0
        for frame in container.decode(stream):
            if frame.time is None and seek:
                raise _SeekMissed
            now = decoded / rate if frame.time is None else frame.time - origin
            decoded += 1
            if held is None and now > times[0] + tolerance:
                if seek:
                    raise _SeekMissed
                raise VideoDecodeError(f"the first frame is at {now:.3f} s, after the clip's start {times[0]:.3f} s")
            while held is not None and not out.full and now > times[len(out.frames)] + tolerance:
                out.add(held)
            if out.full:
                break
            held, held_time = frame, now
        else:  # End of stream: the last frame is the nearest one up to half a frame after it.
            if held is None and seek:
                raise _SeekMissed
            while held is not None and not out.full and times[len(out.frames)] <= held_time + tolerance:
                out.add(held)
            if not out.full:
                raise _EndedEarly(0 if held is None else int(round(held_time * rate)) + 1, float(times[-1]))
    return DecodedClip(np.stack(out.frames), plan.fps, plan.first_frame, decoded)


def _pixels(reformatter: VideoReformatter, frame: av.VideoFrame, spec: ClipSpec, box: CropBox) -> np.ndarray:
    """RGB uint8 (H, W, 3) view: resized in libswscale, then cropped and maybe flipped (np.stack copies it)."""
    size = dict(width=box.resized_width, height=box.resized_height)
    image = reformatter.reformat(frame, format="rgb24", interpolation="BILINEAR", **size).to_ndarray()
    image = image[box.top : box.top + spec.height, box.left : box.left + spec.width]
    return image[:, ::-1] if box.flip else image
