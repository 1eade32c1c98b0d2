"""pyoco-export: safetensors with diffusers names and Orbax params, read back here and by diffusers."""

import json
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import UNet2DConditionModel
from flax import nnx

from pyoco_jax.convert.export import (
    EXPERIMENT_CONFIG_NAME,
    VIDEO_WEIGHTS_NAME,
    export,
    load_exported,
    split_for_diffusers,
)
from pyoco_jax.convert.merge import flat_params
from pyoco_jax.models.unet import VideoUNet
from pyoco_jax.train.build import build_run
from pyoco_jax.train.checkpoint import Checkpointer
from pyoco_jax.train.weights import CheckpointNotFoundError, checkpoint_weights, model_from_weights
from tests.train.helpers import fast_config, single_device_env

STEP = 7
VARIANTS = {
    # The tiny config: class labels, no text, so diffusers gets inert cross-attention.
    "class-conditional": ("model.fps_conditioning=True", "model.temporal.conv=True"),
    "text-conditional": (
        "model.cross_attention_dim=8",
        "model.use_linear_projection=True",
        "model.num_classes=0",
        "data.num_classes=0",
    ),
    # A cascade stage / image-to-video model: the condition's input conv and augmentation embedding.
    "conditioned": (
        "condition.frames=first",
        "model.condition_channels=4",
        "model.condition_augmentation=True",
        "condition.augment_sigma_max=0.1",
    ),
}

_forward = nnx.jit(lambda model, *args: model(*args))


def _random_like(abstract, seed: int):
    """Random values of the abstract state's shapes: no init to compile, and no layer is the identity."""
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if np.issubdtype(leaf.dtype, np.floating):
            return jax.numpy.asarray(0.2 * rng.standard_normal(leaf.shape), leaf.dtype)
        return jax.numpy.zeros(leaf.shape, leaf.dtype)

    return jax.tree.map(fill, abstract)


def _make_run(workdir, overrides):
    """A workdir with one checkpoint whose params and EMA differ from each other."""
    config = fast_config(*overrides)
    abstract = build_run(config).abstract_state
    state = _random_like(abstract, 0).replace(ema=_random_like(abstract.ema, 1), rng=jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(workdir), config.train)
    checkpointer.save(STEP, state, {"position": 0}, config)
    checkpointer.wait()
    checkpointer.close()
    return config


@pytest.fixture(scope="module", params=list(VARIANTS))
def run(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    return workdir, _make_run(workdir, VARIANTS[request.param])


def _inputs(config, frames):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, frames, 16, 16, config.model.in_channels), np.float32)
    t = np.array([0.3, 2.0], np.float32)
    context = rng.standard_normal((2, 5, config.model.cross_attention_dim), np.float32)
    labels = np.array([1, 3]) if config.model.num_classes else None
    fps = np.array([8.0, 4.0], np.float32) if config.model.fps_conditioning else None
    context = context if config.model.cross_attention_dim else None
    if not config.model.condition_channels:
        return x, t, context, labels, fps
    condition = rng.standard_normal((2, frames, 16, 16, config.model.condition_channels), np.float32)
    return x, t, context, labels, fps, condition, np.array([5.0, 90.0], np.float32)


@pytest.mark.parametrize("fmt", ["safetensors", "orbax"])
def test_export_round_trip_is_exact(run, tmp_path, fmt):
    workdir, _ = run
    config, step, weights = checkpoint_weights(str(workdir), ema=True)
    assert step == STEP
    export(weights, config, tmp_path, fmt=fmt, dtype="float32")
    model, loaded_config = load_exported(tmp_path)
    assert json.loads(loaded_config.to_json()) == json.loads(config.to_json())
    inputs = _inputs(config, config.data.num_frames)
    ours = np.asarray(_forward(model_from_weights(config, weights), *inputs))
    assert np.array_equal(np.asarray(_forward(model, *inputs)), ours)


def test_ema_and_params_are_different_exports(run):
    workdir, _ = run
    _, _, ema = checkpoint_weights(str(workdir), ema=True)
    _, _, params = checkpoint_weights(str(workdir), ema=False)
    assert ema.keys() == params.keys()
    assert any(not np.array_equal(ema[k], params[k]) for k in ema)


def test_image_part_loads_into_diffusers(run, tmp_path):
    """diffusers on the exported folder equals our model with the temporal layers off, frame by frame."""
    workdir, config = run
    _, _, weights = checkpoint_weights(str(workdir))
    export(weights, config, tmp_path, fmt="safetensors", dtype="float32")
    unet = UNet2DConditionModel.from_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in unet.parameters()) > 0
    image_config = config.copy_and_resolve_references()
    image_config.model.temporal.update(levels=(), mid=False, attention=False, conv=False, adaptor=False)
    image_config.model.fps_conditioning = False
    image_config.model.condition_channels, image_config.model.condition_augmentation = 0, False
    image_config.data.num_frames = 1
    image_model = nnx.eval_shape(lambda: VideoUNet(image_config.model, num_frames=1, rngs=nnx.Rngs(0)))
    image_names = set(flat_params(image_model))
    image_weights = {k: v for k, v in weights.items() if k in image_names}
    ours_model = model_from_weights(image_config, image_weights)
    x, t, context, labels, *_ = _inputs(image_config, 1)
    ours = np.asarray(_forward(ours_model, x, t, context, labels, None))
    context_torch = torch.from_numpy(context if context is not None else np.ones((2, 1, 1), np.float32))
    with torch.no_grad():
        theirs = unet(
            torch.from_numpy(x[:, 0]).permute(0, 3, 1, 2),
            torch.from_numpy(t),
            context_torch,
            class_labels=None if labels is None else torch.from_numpy(labels),
        ).sample
    error = np.abs(theirs.permute(0, 2, 3, 1).numpy() - ours[:, 0]).max()
    assert error < 1e-4, error


def test_video_tensors_use_our_names(run):
    workdir, config = run
    _, _, weights = checkpoint_weights(str(workdir))
    image, video = split_for_diffusers(weights, config.model)
    video_parts = ("temporal", "adaptor", "fps_embedding", "class_embedding", "conv_in_condition", "augmentation")
    assert video and all(any(part in k for part in video_parts) for k in video)
    assert not any("temporal" in k or "adaptor" in k for k in image)


def test_bfloat16_export_differs_only_by_rounding(run, tmp_path):
    workdir, config = run
    _, _, weights = checkpoint_weights(str(workdir))
    export(weights, config, tmp_path / "f32", fmt="safetensors", dtype="float32")
    export(weights, config, tmp_path / "bf16", fmt="safetensors", dtype="bfloat16")
    for name in ("diffusion_pytorch_model.safetensors", VIDEO_WEIGHTS_NAME):
        full = safetensors.numpy.load_file(tmp_path / "f32" / name)
        half = safetensors.numpy.load_file(tmp_path / "bf16" / name)
        assert full.keys() == half.keys()
        for key, value in full.items():
            assert half[key].dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(half[key], value.astype(ml_dtypes.bfloat16))
            # Round to nearest in bfloat16 (8 significand bits): relative error <= 2^-8.
            assert np.all(np.abs(half[key].astype(np.float32) - value) <= 2.0**-8 * np.abs(value))
    f32_size = (tmp_path / "f32" / "diffusion_pytorch_model.safetensors").stat().st_size
    bf16_size = (tmp_path / "bf16" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert bf16_size < 0.6 * f32_size


@pytest.mark.slow
def test_cli_exports_a_checkpoint_and_names_missing_steps(tmp_path):
    workdir = tmp_path / "run"
    _make_run(workdir, VARIANTS["class-conditional"])
    command = [sys.executable, "-m", "pyoco_jax.cli.export", f"--workdir={workdir}"]
    env = single_device_env()
    missing = subprocess.run([*command, "--step=3", f"--out={tmp_path / 'x'}"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and f"available steps: [{STEP}]" in missing.stderr
    out = tmp_path / "export"
    done = subprocess.run(
        [*command, "--ema", "--dtype=bfloat16", f"--out={out}"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / EXPERIMENT_CONFIG_NAME).read_text())["model"]["num_classes"] == 4
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "diffusion_pytorch_model.safetensors",
        VIDEO_WEIGHTS_NAME,
        EXPERIMENT_CONFIG_NAME,
    }


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        checkpoint_weights(str(tmp_path))
