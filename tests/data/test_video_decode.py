"""Clip decoding: the right frames at the right times, the right pixels, seeking, bounded work.

Codec tolerance: H.264 (crf 10), VP9 lossless and MPEG-4 (qscale 2) of flat
colours decode within 8 levels of the input (measured: 3, 3 and 5); FFV1 RGB is
exact. Frame indices are read from colour codes that tolerate 19 levels.
"""

import numpy as np
import pytest

from pyoco_jax.data.clip_sampling import ClipDraws, ClipSpec, CropBox, VideoTooShortError, clip_times, crop_box
from pyoco_jax.data.decode import VideoDecodeError, decode_clip
from tests.data.videos import (
    code_error,
    coded_frames,
    frame_codes,
    write_audio_only,
    write_avi,
    write_lossless,
    write_mp4,
    write_webm,
)

CODEC_TOLERANCE = 8
WRITERS = {"mp4": write_mp4, "webm": write_webm, "avi": write_avi}


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """36 coded frames at 24 fps in each container."""
    folder = tmp_path_factory.mktemp("coded")
    paths = {}
    for ext, write in WRITERS.items():
        paths[ext] = str(folder / f"coded.{ext}")
        write(paths[ext], coded_frames(36), 24)
    return paths


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_every_frame_decodes_to_what_was_encoded(coded, ext):
    clip = decode_clip(coded[ext], ClipSpec(36, 48, 64))
    np.testing.assert_array_equal(frame_codes(clip.frames), np.arange(36))
    assert code_error(clip.frames, np.arange(36)) <= CODEC_TOLERANCE
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (36, 48, 64, 3)
    assert clip.fps == 24.0


@pytest.mark.parametrize("ext", sorted(WRITERS))
@pytest.mark.parametrize(
    "stride, target_fps, start_draw, expected, fps",
    [
        (2, 0.0, 0.0, [0, 2, 4, 6, 8], 12.0),
        (3, 0.0, 0.99, [23, 26, 29, 32, 35], 8.0),  # The latest start: frames 23 + 3k, last frame 35.
        (1, 8.0, 0.5, [12, 15, 18, 21, 24], 8.0),  # 24 -> 8 fps is every third frame; starts 0..23.
        (1, 6.0, 0.0, [0, 4, 8, 12, 16], 6.0),
        (1, 100.0, 0.0, [0, 1, 2, 3, 4], 24.0),  # Above the native rate: every frame, fps says so.
    ],
)
def test_stride_and_target_fps_pick_the_right_frames(coded, ext, stride, target_fps, start_draw, expected, fps):
    spec = ClipSpec(5, 48, 64, frame_stride=stride, target_fps=target_fps)
    clip = decode_clip(coded[ext], spec, ClipDraws(start=start_draw))
    assert frame_codes(clip.frames).tolist() == expected
    assert clip.fps == pytest.approx(fps) and clip.first_frame == expected[0]
    assert code_error(clip.frames, expected) <= CODEC_TOLERANCE


def test_the_clip_start_is_uniform_over_every_valid_position():
    spec = ClipSpec(5, 8, 8, frame_stride=2)  # Spans 9 frames: starts 0..27 of 36 are valid.
    starts = [clip_times(spec, ClipDraws(start=u), 24.0, 36).first_frame for u in (np.arange(280) + 0.5) / 280]
    assert sorted(set(starts)) == list(range(28)) and np.bincount(starts).tolist() == [10] * 28
    centre = ClipSpec(5, 8, 8, frame_stride=2, temporal="center")
    assert clip_times(centre, ClipDraws(start=0.0), 24.0, 36).first_frame == 13


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_start_and_end_seconds_bound_the_clip(coded, ext):
    spec = ClipSpec(4, 48, 64, frame_stride=2)
    # [0.5 s, 1.0 s) at 24 fps is frames 12..23; a 4-frame stride-2 clip spans 7 frames: starts 12..17.
    first = decode_clip(coded[ext], spec, ClipDraws(start=0.0), start=0.5, end=1.0)
    last = decode_clip(coded[ext], spec, ClipDraws(start=0.999), start=0.5, end=1.0)
    assert frame_codes(first.frames).tolist() == [12, 14, 16, 18]
    assert frame_codes(last.frames).tolist() == [17, 19, 21, 23]
    with pytest.raises(VideoTooShortError, match="too short"):
        decode_clip(coded[ext], spec, start=0.5, end=0.7)


def test_seeking_decodes_only_from_the_keyframe_before_the_clip(tmp_path):
    path = tmp_path / "long.mp4"
    write_mp4(path, coded_frames(36), gop=6)
    clip = decode_clip(path, ClipSpec(3, 48, 64), ClipDraws(start=0.99))  # Frames 33..35.
    assert frame_codes(clip.frames).tolist() == [33, 34, 35]
    assert clip.frames_decoded <= 6 + 3  # From keyframe 30 at the latest; without seeking it would be 36.
    middle = decode_clip(path, ClipSpec(3, 48, 64, temporal="center"))  # Frames 16..18, keyframe 12.
    assert frame_codes(middle.frames).tolist() == [16, 17, 18] and middle.frames_decoded <= 6 + 3 + 1


def _ramp(height: int, width: int) -> np.ndarray:
    """A static image linear in x and y (any linear resampling keeps it linear) with distinct channels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([40 + 1.5 * x, 30 + 2.0 * y, 200 - 1.0 * x - 0.5 * y], -1)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_and_flip_take_exactly_the_chosen_pixels(tmp_path, flip):
    image = np.round(_ramp(48, 96)).astype(np.uint8)
    path = tmp_path / "ramp.mkv"
    write_lossless(path, np.repeat(image[None], 6, axis=0))
    spec = ClipSpec(2, 48, 48, crop="random", flip=flip)  # Same height: no resize, 49 horizontal offsets.
    draws = ClipDraws(start=0.0, top=0.3, left=0.1, flip=0.2)
    clip = decode_clip(path, spec, draws)
    left = int(0.1 * 49)
    expected = image[:, left : left + 48]
    np.testing.assert_array_equal(clip.frames[0], expected[:, ::-1] if flip else expected)  # FFV1: exact.
    centre = decode_clip(path, ClipSpec(2, 48, 48, crop="center"), draws)
    np.testing.assert_array_equal(centre.frames[1], image[:, 24:72])


def test_resize_covers_the_output_then_crops(tmp_path):
    ramp = _ramp(96, 128)
    path = tmp_path / "ramp.mkv"
    write_lossless(path, np.repeat(np.round(ramp).astype(np.uint8)[None], 4, axis=0))
    spec = ClipSpec(1, 48, 48, crop="center")  # Short side 96 -> 48: scale 1/2, 64x48, centre crop at x 8.
    assert crop_box(spec, ClipDraws(), 96, 128) == CropBox(48, 64, 0, 8, False)
    frame = decode_clip(path, spec).frames[0].astype(np.float64)
    y, x = np.mgrid[0:48, 8:56]
    expected = _ramp(96, 128)[2 * y + 1, 2 * x + 1] - np.array([0.75, 1.0, -0.75])  # Source centre 2j + 0.5.
    inner = (slice(1, -1), slice(1, -1))  # Edge pixels see the border.
    assert np.abs(frame[inner] - expected[inner]).max() <= 2.0


def test_clip_draws_depend_only_on_seed_index_and_epoch():
    draws = ClipDraws.for_example(7, 3, 0)
    assert draws == ClipDraws.for_example(7, 3, 0)
    assert len({ClipDraws.for_example(7, 3, e) for e in range(4)} | {ClipDraws.for_example(8, 3, 0)}) == 5


def test_bad_inputs_raise_clear_errors(coded, tmp_path):
    short = tmp_path / "short.mp4"
    write_mp4(short, coded_frames(3))
    with pytest.raises(VideoTooShortError, match="too short: 8 frames"):
        decode_clip(short, ClipSpec(8, 16, 16))
    audio = tmp_path / "audio.m4a"
    write_audio_only(audio)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        decode_clip(audio, ClipSpec(2, 16, 16))
    with pytest.raises(VideoDecodeError, match="empty"):
        decode_clip(b"", ClipSpec(2, 16, 16))
    with pytest.raises(ValueError, match="frame_stride"):
        ClipSpec(2, 16, 16, frame_stride=0)
    with pytest.raises(ValueError, match="crop"):
        ClipSpec(2, 16, 16, crop="middle")


def test_a_header_that_over_counts_frames_still_gives_a_clip_of_real_frames(coded, tmp_path):
    """A cut-off WebM claims its full duration; decoding learns the real length and picks the clip again."""
    data = open(coded["webm"], "rb").read()
    cut = data[: len(data) // 2]
    clip = decode_clip(cut, ClipSpec(4, 48, 64, temporal="center"))
    codes = frame_codes(clip.frames)
    np.testing.assert_array_equal(np.diff(codes), 1)
    assert code_error(clip.frames, codes) <= CODEC_TOLERANCE and codes[-1] < 30
