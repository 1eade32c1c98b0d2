"""One sampling path for a text model: the trainer (the latent cache's empty prompt) and `pyoco-sample` (the
text encoder's) both sample without a prompt, unconditionally, through `sampling_inputs`."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from pyoco_jax.config import load_config
from pyoco_jax.convert.clip import encode_prompts, load_text_encoder, load_tokenizer
from pyoco_jax.data.video_io import read_video
from pyoco_jax.diffusion import make_formulation
from pyoco_jax.sample.decode import latent_decoder
from pyoco_jax.sample.inputs import sampling_inputs
from pyoco_jax.sample.sampler import make_sampler, sample_videos
from pyoco_jax.train.build import build_model, build_run
from pyoco_jax.train.checkpoint import Checkpointer
from pyoco_jax.train.state import split_model
from tests.models.clip_testing import TINY_TEXT_ENCODER, save_text_encoder, save_vocab
from tests.models.vae_testing import save_tiny_vae
from tests.train.helpers import REPO, single_device_env

CONFIG = str(REPO / "configs" / "tiny_latent.py")
NUM = 2
PIXELS = (NUM, 4, 16, 16, 3)  # tiny_latent: 4 frames of 8x8 latents; the tiny VAE upsamples 2x.


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """tiny_latent with a tiny pipeline folder as its VAE and CLIP text encoder."""
    pipe = tmp_path_factory.mktemp("pipe")
    save_tiny_vae(pipe / "vae")
    save_text_encoder(pipe / "text_encoder", **TINY_TEXT_ENCODER)
    save_vocab(pipe / "tokenizer")
    return load_config(
        CONFIG, [f"data.path={pipe}", f"vae.path={pipe}", f"text.path={pipe}", "sample.num_steps=2"], reads_data=False
    )


@pytest.fixture(scope="module")
def empty_prompt(config):
    encoder, tokenizer = load_text_encoder(config.text.path), load_tokenizer(config.text.path)
    return np.asarray(encode_prompts(encoder, tokenizer, [""]))[0]


@pytest.fixture(scope="module")
def sample(config):
    """`inputs -> uint8 videos` of a freshly initialised text model: one jitted sampler for every test."""
    graphdef, params, frozen = split_model(build_model(config, 0), config.optim.trainable)
    sampler = make_sampler(graphdef, make_formulation(config.diffusion), config, config.sample.num_steps)
    decode = latent_decoder(config)  # As the trainer builds it: once, beside the sampling inputs.
    return lambda inputs: sample_videos(sampler, params, frozen, config, seed=0, num=NUM, decode=decode, **inputs)


@pytest.mark.slow
def test_trainer_path_samples_the_caches_empty_prompt(config, empty_prompt, sample):
    cached = empty_prompt.astype(np.float16)  # As pyoco-prepare stores it.
    inputs = sampling_inputs(config, NUM, prompts=config.sample.prompts, null_context=cached)
    assert config.sample.prompts == ("",) and inputs["labels"] is None
    np.testing.assert_array_equal(inputs["null_context"], cached)
    np.testing.assert_array_equal(inputs["context"], np.broadcast_to(cached, (NUM, *cached.shape)))
    videos = sample(inputs)
    assert videos.shape == PIXELS and videos.dtype == np.uint8


@pytest.mark.slow
def test_cli_path_without_a_prompt_samples_the_encoders_empty_prompt(config, empty_prompt, sample):
    inputs = sampling_inputs(config, NUM)
    np.testing.assert_allclose(inputs["null_context"], empty_prompt, atol=1e-6)
    np.testing.assert_allclose(inputs["context"], np.broadcast_to(empty_prompt, (NUM, *empty_prompt.shape)), atol=1e-6)
    assert sample(inputs).shape == PIXELS


def test_prompts_cycle_over_the_videos(config, empty_prompt):
    inputs = sampling_inputs(config, 3, prompts=["a cat", ""])
    context = inputs["context"]
    assert context.shape == (3, *empty_prompt.shape)
    np.testing.assert_allclose(context[0], context[2], atol=1e-6)
    np.testing.assert_allclose(context[1], empty_prompt, atol=1e-6)
    assert np.abs(context[0] - empty_prompt).max() > 1e-2


def test_a_text_model_without_an_encoder_says_which_key_to_set(config, empty_prompt):
    no_text = load_config(CONFIG, [f"data.path={config.data.path}", f"vae.path={config.vae.path}"], reads_data=False)
    with pytest.raises(ValueError, match="'text.path' is empty"):
        sampling_inputs(no_text, NUM)
    cached = sampling_inputs(no_text, NUM, null_context=empty_prompt)  # The trainer needs no encoder.
    assert cached["context"].shape == (NUM, *empty_prompt.shape)


@pytest.mark.slow
def test_pyoco_sample_without_a_prompt_writes_the_unconditional_videos(config, tmp_path):
    """The CLI end to end on a checkpoint of the untrained text model (at init, so nothing to train here)."""
    state = jax.jit(lambda: build_run(config).init_state(config))()
    checkpointer = Checkpointer(str(tmp_path / "run"), config.train)
    checkpointer.save(1, state, {"position": 0}, config)
    checkpointer.wait()
    checkpointer.close()
    out = tmp_path / "unconditional.mp4"
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={tmp_path / 'run'}", "--num=1", "--steps=2"]
    result = subprocess.run(command + [f"--out={out}"], env=single_device_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert read_video(out)[0].shape[0] == PIXELS[1]
