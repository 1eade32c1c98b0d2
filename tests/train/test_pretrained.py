"""Starting from a diffusers image U-Net: 2D weights loaded, temporal layers new, same output per frame.

The tiny config trains EDM, so the DDPM-trained image U-Net is fine-tuned through the VP -> EDM bridge
(diffusion.edm.pretrained_prediction=epsilon, sigmas inside SD's schedule [0.0292, 14.6]).
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from pyoco_jax.diffusion import BridgedEDM
from pyoco_jax.errors import ConfigError
from pyoco_jax.train.build import build_run
from pyoco_jax.train.pretrained import check_pretrained_training, init_from_pretrained
from pyoco_jax.train.trainer import train
from tests.models.diffusers_testing import saved_random_unet
from tests.train.helpers import checkpoint_steps, fast_config

pytestmark = pytest.mark.slow
NO_ATTENTION = ("model.attention_levels=(False,False,False)", "model.mid_block_attention=False")
BRIDGE = ("diffusion.edm.pretrained_prediction=epsilon", "diffusion.edm.sigma_min=0.03", "diffusion.edm.sigma_max=14.6")
SD_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}


@pytest.fixture(scope="module")
def image_unet(tmp_path_factory):
    """A random diffusers U-Net shaped like the fast test config's 2D part, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("image_unet")
    unet = saved_random_unet(
        folder,
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        mid_block_type="UNetMidBlock2D",
        norm_num_groups=8,
        num_class_embeds=4,
    )
    return unet, folder


def test_video_model_starts_as_the_image_model_on_every_frame(image_unet):
    unet, folder = image_unet
    config = fast_config(*NO_ATTENTION, *BRIDGE, f"train.init_from={folder}", "optim.trainable=temporal|adaptor")
    parts = build_run(config)
    state = init_from_pretrained(jax.jit(lambda: parts.init_state(config))(), parts, config)
    model = nnx.merge(parts.graphdef, state.params, state.frozen)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, config.data.num_frames, 16, 16, 3)).astype(np.float32)
    t = np.array([10.0, 500.0], np.float32)
    labels = np.array([1, 3])
    ours = np.asarray(model(jnp.asarray(x), jnp.asarray(t), labels=jnp.asarray(labels)))
    for frame in range(config.data.num_frames):
        with torch.no_grad():
            reference = unet(
                torch.from_numpy(x[:, frame].transpose(0, 3, 1, 2).copy()),
                torch.from_numpy(t),
                encoder_hidden_states=None,
                class_labels=torch.from_numpy(labels),
            ).sample.numpy()
        np.testing.assert_allclose(ours[:, frame], reference.transpose(0, 2, 3, 1), atol=1e-4)
    for ema, param in zip(jax.tree.leaves(state.ema), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(ema, param)


def test_edm_training_run_through_the_bridge_from_the_image_model(image_unet, tmp_path):
    _, folder = image_unet
    config = fast_config(
        *NO_ATTENTION, *BRIDGE, f"train.init_from={folder}", "train.num_steps=2", "data.global_batch_size=8"
    )
    assert isinstance(build_run(config).formulation, BridgedEDM)
    metrics = train(config, str(tmp_path))  # Two bridged EDM steps, then Heun samples through the bridge.
    assert checkpoint_steps(tmp_path) == [2]
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])


def _pipeline(unet_folder, root, **scheduler):
    """A pipeline-shaped folder: root/unet and root/scheduler/scheduler_config.json (SD's, with `scheduler`)."""
    shutil.copytree(unet_folder, root / "unet")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({**SD_SCHEDULER, **scheduler}))
    return root


def test_a_v_prediction_model_bridged_as_epsilon_is_refused(image_unet, tmp_path):
    pipe = _pipeline(image_unet[1], tmp_path, prediction_type="v_prediction")
    config = fast_config(*NO_ATTENTION, *BRIDGE, f"train.init_from={pipe}")
    parts = build_run(config)
    with pytest.raises(ConfigError, match=r"'diffusion\.edm\.pretrained_prediction': is 'epsilon'.*set it to 'v'"):
        init_from_pretrained(jax.jit(lambda: parts.init_state(config))(), parts, config)


@pytest.mark.parametrize(
    "scheduler, overrides, match",
    [
        (dict(), (), None),
        (dict(prediction_type="v_prediction"), ("diffusion.edm.pretrained_prediction=v",), None),
        (dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02), (), r"'diffusion\.ddpm\.schedule'.*'linear'"),
        (dict(beta_end=0.02), (), r"'diffusion\.ddpm\.beta_end': is 0\.012.*0\.02"),
        (dict(num_train_timesteps=500), (), r"'diffusion\.ddpm\.num_train_timesteps'"),
        (dict(prediction_type="sample"), ("diffusion.formulation=ddpm",), r"'diffusion\.ddpm\.prediction'.*'x0'"),
        (dict(prediction_type="flow"), (), r"'train\.init_from'.*prediction_type='flow' is not supported"),
    ],
)
def test_settings_that_contradict_the_scheduler_config_are_refused(image_unet, tmp_path, scheduler, overrides, match):
    pipe = _pipeline(image_unet[1], tmp_path, **scheduler)
    config = fast_config(*NO_ATTENTION, *BRIDGE, f"train.init_from={pipe / 'unet'}", *overrides)
    if match is None:
        check_pretrained_training(config)
    else:
        with pytest.raises(ConfigError, match=match):
            check_pretrained_training(config)


def test_a_mismatched_image_model_fails_clearly(image_unet):
    _, folder = image_unet
    config = fast_config(*NO_ATTENTION, *BRIDGE, "model.block_out_channels=(8,16,32)", f"train.init_from={folder}")
    parts = build_run(config)
    with pytest.raises(ValueError, match="shape"):
        init_from_pretrained(jax.jit(lambda: parts.init_state(config))(), parts, config)
