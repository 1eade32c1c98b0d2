"""PYoCo's recipe: pretrain an image model (single frames, no temporal layers), then fine-tune it on video.

`train.init_from` names the image run's workdir; the video model must start as the image model on every
frame (its temporal layers are the identity at init) and refuse diffusion settings the image run did not use.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.errors import ConfigError
from pyoco_jax.train.build import build_run
from pyoco_jax.train.pretrained import init_from_pretrained
from pyoco_jax.train.trainer import train
from pyoco_jax.train.weights import checkpoint_weights, model_from_weights
from tests.train.helpers import fast_config

pytestmark = pytest.mark.slow
IMAGE = ("data.num_frames=1", "model.temporal.levels=()", "model.temporal.mid=False", "model.temporal.adaptor=False")
FROM_RUN = ("diffusion.edm.pretrained_prediction=edm",)
SD_SIGMAS = ("diffusion.edm.sigma_min=0.03", "diffusion.edm.sigma_max=14.6")  # Valid for a bridged DDPM model.


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("image_run")
    steps = ("train.num_steps=3", "train.checkpoint_every=3", "data.global_batch_size=8")
    train(fast_config(*IMAGE, *steps), str(workdir))
    return str(workdir)


def _initial_model(config):
    parts = build_run(config)
    state = init_from_pretrained(jax.jit(lambda: parts.init_state(config))(), parts, config)
    return nnx.merge(parts.graphdef, state.params, state.frozen)


def test_video_model_starts_as_the_image_run_on_every_frame(image_run):
    config = fast_config(*FROM_RUN, f"train.init_from={image_run}")
    video = _initial_model(config)
    image_config, _, weights = checkpoint_weights(image_run, ema=True)
    image = model_from_weights(image_config, weights)

    rng = np.random.default_rng(0)
    side = config.data.resolution
    x = jnp.asarray(rng.normal(size=(2, config.data.num_frames, side, side, 3)).astype(np.float32))
    t = jnp.asarray([0.1, 2.0], jnp.float32)
    labels = jnp.asarray([1, 3])
    ours = np.asarray(video(x, t, labels=labels))
    for frame in range(config.data.num_frames):
        alone = np.asarray(image(x[:, frame : frame + 1], t, labels=labels))[:, 0]
        np.testing.assert_allclose(ours[:, frame], alone, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ("diffusion.edm.pretrained_prediction=epsilon", *SD_SIGMAS),
            r"'diffusion\.edm\.pretrained_prediction'.*set it to 'edm'",
        ),
        ((*FROM_RUN, "diffusion.edm.sigma_data=1.0"), r"'diffusion\.edm\.sigma_data': is 1\.0.*set it to 0\.5"),
        (("diffusion.formulation=ddpm",), r"'diffusion\.formulation': is 'ddpm'.*set it to 'edm'"),
    ],
)
def test_diffusion_settings_the_image_run_did_not_use_are_refused(image_run, overrides, match):
    with pytest.raises(ConfigError, match=match):
        _initial_model(fast_config(*overrides, f"train.init_from={image_run}"))
