"""VideoVAE: equals the image decoder per frame at init, then looks across frames once trained."""

import jax
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.convert.merge import NEW_PARAM_PATTERN, flat_params
from pyoco_jax.convert.vae import load_vae
from pyoco_jax.models.vae.config import VAEConfig
from pyoco_jax.models.vae.video import TemporalDecoderSpec, VideoVAE, video_vae_from_image
from tests.models.model_testing import make_rngs, perturb
from tests.models.vae_testing import save_tiny_vae


@pytest.fixture(scope="module")
def image_vae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    save_tiny_vae(folder)
    return load_vae(folder)


@pytest.fixture
def latents():
    return np.random.default_rng(0).standard_normal((2, 4, 16, 16, 4)).astype(np.float32)


decode_video = nnx.jit(lambda vae, z: vae.decode_video(z))
video_decode = nnx.jit(lambda vae, z: vae(z))


def test_shares_the_image_weights_and_adds_only_temporal_layers(image_vae):
    video = video_vae_from_image(image_vae, TemporalDecoderSpec(), num_frames=4, rngs=make_rngs())
    image, ours = flat_params(image_vae), flat_params(video)
    temporal = sorted(name for name in ours if NEW_PARAM_PATTERN.search(name))
    assert temporal and all(".temporal_mid." in n or ".temporal_layers." in n for n in temporal)
    # One temporal layer after the mid block and after each of the 2 + 2 up-block ResNets.
    assert len({n.split(".conv.")[0].split(".attention.")[0] for n in temporal}) == 5
    shared = set(ours) - set(temporal)
    assert shared == {n for n in image if n.startswith(("decoder.", "post_quant_conv."))}
    for name in shared:
        assert ours[name].get_value() is image[name].get_value(), name


def test_equals_the_image_decoder_per_frame_at_init(image_vae, latents):
    """Both branches (temporal conv and attention) are live code here; their zero-init outputs make each an identity."""
    video = video_vae_from_image(image_vae, TemporalDecoderSpec(), num_frames=4, rngs=make_rngs())
    expected = np.asarray(decode_video(image_vae, latents))
    got = np.asarray(video_decode(video, latents))
    assert got.shape == (2, 4, 32, 32, 3)
    assert np.abs(got - expected).max() < 1e-6
    assert np.abs(expected).max() > 0.5


def test_temporal_layers_mix_frames_both_ways(image_vae, latents):
    """With non-zero temporal weights, changing one frame's latent changes the other frames' output."""
    video = video_vae_from_image(image_vae, TemporalDecoderSpec(), num_frames=4, rngs=make_rngs())
    perturb(video, scale=0.3)
    edited = latents.copy()
    edited[:, 0] += 1.0
    base, changed = np.asarray(video_decode(video, latents)), np.asarray(video_decode(video, edited))
    assert np.abs(base - np.asarray(decode_video(image_vae, latents))).max() > 1e-2  # The layers are live.
    assert np.abs(changed[:, 3] - base[:, 3]).max() > 1e-3  # Frame 0 reaches frame 3 (not causal).
    image_base, image_changed = decode_video(image_vae, latents), decode_video(image_vae, edited)
    np.testing.assert_array_equal(image_changed[:, 1:], image_base[:, 1:])  # Per frame: no reach.


def test_refuses_bad_specs_and_shapes():
    with pytest.raises(ValueError, match="temporal_conv or vae.temporal_attention"):
        TemporalDecoderSpec(conv=False, attention=False)
    with pytest.raises(ValueError, match="temporal_position_encoding"):
        TemporalDecoderSpec(position_encoding="rotary")
    config = VAEConfig(block_out_channels=(16, 24), norm_num_groups=8)
    with pytest.raises(ValueError, match="temporal_num_heads=16 does not divide the decoder's 24 channels"):
        VideoVAE(config, TemporalDecoderSpec(num_heads=16), num_frames=4, rngs=make_rngs())
    video = nnx.eval_shape(lambda: VideoVAE(config, TemporalDecoderSpec(conv=False), num_frames=4, rngs=make_rngs()))
    with pytest.raises(ValueError, match=r"video latents must be \(B, F, H, W, C\)"):
        video(jax.numpy.zeros((4, 16, 16, 4)))
    with pytest.raises(ValueError, match=r"must be \(N, H, W, 4\)"):
        video(jax.numpy.zeros((1, 4, 16, 16, 3)))
