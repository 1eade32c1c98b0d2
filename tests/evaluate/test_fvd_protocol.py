"""FVD protocols: their fixed choices, the errors that say what to change, and I3D input preparation."""

import numpy as np
import pytest

from pyoco_jax.evaluate.fvd_protocol import NAMED_PROTOCOLS, check_clips, get_protocol, prepare_clips


def test_stylegan_v_protocol_is_fixed():
    protocol = get_protocol("fvd2048_16f")
    assert (protocol.num_clips, protocol.num_frames, protocol.frame_repeat, protocol.size) == (2048, 16, 1, 224)
    assert protocol.feature_dim == 400


def test_unknown_protocol_says_how_names_are_made():
    for name in ("fvd100", "fvd256_3f", "fvd1_16f", "fvd256_32f", "FVD256_8f"):
        with pytest.raises(ValueError, match=r"fvd<clips>_<frames>f .*fvd256_8f"):
            get_protocol(name)


def test_a_protocol_name_is_its_definition():
    for name in NAMED_PROTOCOLS:
        assert get_protocol(name).name == name
    protocol = get_protocol("fvd12_4f")
    assert (protocol.num_clips, protocol.num_frames, protocol.frame_repeat) == (12, 4, 4)
    assert get_protocol("fvd256_8f").frame_repeat == 2


def test_too_few_clips_names_the_protocol():
    videos = np.zeros((10, 16, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"fvd256_16f needs 256 clips, got 10; .*fvd<clips>_16f"):
        check_clips(get_protocol("fvd256_16f"), videos)


def test_wrong_frame_count_names_the_protocol_and_the_fix():
    videos = np.zeros((256, 8, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"fvd256_16f: clips must have exactly 16 .* videos\[:, :16\]"):
        check_clips(get_protocol("fvd256_16f"), videos)


def test_wrong_channels_and_range_are_refused():
    protocol = get_protocol("fvd256_8f")
    with pytest.raises(ValueError, match="fvd256_8f: videos must have 3 RGB channels"):
        check_clips(protocol, np.zeros((256, 8, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match=r"fvd256_8f: float videos must be in \[-1, 1\]"):
        check_clips(protocol, np.full((256, 8, 8, 8, 3), 2.0, np.float32))
    check_clips(protocol, np.zeros((300, 8, 8, 8, 3), np.float32))  # more clips than needed is fine


def test_prepare_uint8_clips_gives_i3d_inputs():
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(2, 16, 12, 20, 3), dtype=np.uint8)
    videos[0] = 0
    videos[1, :, :, :, 0] = 255
    clips = prepare_clips(get_protocol("fvd256_16f"), videos)
    assert clips.shape == (2, 16, 224, 224, 3) and clips.dtype == np.float32
    assert clips.min() >= -1.0 and clips.max() <= 1.0
    np.testing.assert_allclose(clips[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(clips[1, ..., 0], 1.0, atol=1e-6)


def test_eight_frame_protocol_repeats_each_frame_twice():
    videos = np.broadcast_to(np.arange(8, dtype=np.uint8)[None, :, None, None, None] * 30, (1, 8, 4, 4, 3))
    clips = prepare_clips(get_protocol("fvd256_8f"), videos)
    assert clips.shape == (1, 16, 224, 224, 3)
    expected = np.repeat(np.arange(8) * 30 / 127.5 - 1.0, 2)
    np.testing.assert_allclose(clips[0, :, 100, 100, 1], expected, atol=1e-6)


def test_float_clips_keep_their_values():
    videos = np.full((1, 16, 8, 8, 3), 0.25, np.float32)
    np.testing.assert_allclose(prepare_clips(get_protocol("fvd2048_16f"), videos), 0.25, atol=1e-6)
