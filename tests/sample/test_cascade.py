"""The cascade end to end at toy size: a base run, a temporal-interpolation stage (trained with random masks, so
it also does image-to-video and extension) and a super-resolution stage are trained a few steps each, then
chained in process and through `pyoco-sample --given ... --cascade`."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pyoco_jax.conditioning import downsample
from pyoco_jax.data.video_io import read_video, write_mp4
from pyoco_jax.sample.cascade import run_cascade
from pyoco_jax.sample.given import sample_given, square_frames
from pyoco_jax.sample.run_sampler import load_run_sampler
from pyoco_jax.train.trainer import train
from pyoco_jax.video_range import video_to_model_range
from tests.train.helpers import run, single_device_env, small_config

pytestmark = pytest.mark.slow
STEPS = ("train.num_steps=2", "train.checkpoint_every=2", "sample.num_steps=2", "data.global_batch_size=8")
AUGMENTED = (
    "model.condition_augmentation=True",
    "condition.augment_sigma_max=0.2",
    "condition.sample_augment_sigma=0.05",
)
STAGES = {
    "base": ("data.resolution=8",),
    "interpolation": (
        "data.resolution=8",
        "data.num_frames=3",
        "condition.frames=random",
        "condition.interpolation_factor=2",
        "condition.given_frames=1",
        "model.condition_channels=4",
        *AUGMENTED,
    ),
    "super_resolution": ("data.resolution=16", "condition.low_res_factor=2", "model.condition_channels=3", *AUGMENTED),
}


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cascade")
    for name, overrides in STAGES.items():
        train(small_config(*overrides, *STEPS), str(root / name))
    return {name: str(root / name) for name in STAGES}


def _levels(video: np.ndarray) -> np.ndarray:
    return np.asarray(video_to_model_range(jnp.asarray(video))) * 127.5


def test_interpolation_keeps_the_keyframes_and_super_resolution_downsamples_to_its_input(stage_dirs):
    base, *stages = (load_run_sampler(stage_dirs[name]) for name in STAGES)
    (coarse, filled, sharp), labels = run_cascade(base, stages, num=2, seed=0)
    assert coarse.shape == (2, 4, 8, 8, 3) and filled.shape == (2, 7, 8, 8, 3) and sharp.shape == (2, 7, 16, 16, 3)
    np.testing.assert_array_equal(filled[:, ::2], coarse)  # Given frames come out unchanged, bit for bit.
    round_trip = np.abs(np.asarray(downsample(_levels(sharp), 2)) - _levels(filled))
    print(f"SR round trip: mean {round_trip.mean():.3f}, max {round_trip.max():.3f} levels of 255")
    assert round_trip.max() <= 0.5 + 1e-3  # Rounding each output pixel to uint8 moves a block mean by <= 0.5 level.
    assert labels.shape == (2,)


@pytest.mark.parametrize(("mode", "kept", "source"), [("first", 0, -1), ("last", -1, 0)])
def test_a_random_mask_stage_continues_a_users_clip_or_leads_up_to_it(stage_dirs, tmp_path, mode, kept, source):
    frames = np.random.default_rng(0).integers(0, 256, (3, 12, 20, 3), np.uint8)
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames, fps=8)
    stage = load_run_sampler(stage_dirs["interpolation"], overrides=[f"condition.frames={mode}"])
    videos, labels = sample_given(stage, str(path), num=2, seed=0)
    pixels = stage.to_pixels(videos)
    assert pixels.shape == (2, 3, 8, 8, 3) and labels.shape == (2,)
    decoded = square_frames(read_video(path)[0], 8)  # The file's frames as decoded, scaled as the stage scales them.
    np.testing.assert_array_equal(pixels[:, kept], np.broadcast_to(decoded[source], (2, 8, 8, 3)))


def test_an_image_starts_the_clip_and_a_bad_file_is_one_line(stage_dirs, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (10, 30, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "first.png")
    stage = load_run_sampler(stage_dirs["interpolation"], overrides=["condition.frames=first"])
    videos, _ = sample_given(stage, str(tmp_path / "first.png"), num=1, seed=3)
    np.testing.assert_array_equal(stage.to_pixels(videos)[0, 0], square_frames(image[None], 8)[0])
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={stage_dirs['interpolation']}"]
    given = [f"--given={tmp_path / 'broken.mp4'}", f"--out={tmp_path / 'x.mp4'}"]
    result = subprocess.run([*command, *given], env=single_device_env(), capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "cannot read it as an image or a video" in result.stderr and "Traceback" not in result.stderr


def test_the_sample_cli_interpolates_a_users_keyframes_then_sharpens_them(stage_dirs, tmp_path):
    keyframes = np.random.default_rng(2).integers(0, 256, (4, 8, 8, 3), np.uint8)
    write_mp4(tmp_path / "keyframes.mp4", keyframes, fps=8)
    out = tmp_path / "cascade.mp4"
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={stage_dirs['interpolation']}"]
    given = [f"--given={tmp_path / 'keyframes.mp4'}", f"--cascade={stage_dirs['super_resolution']}"]
    run([*command, *given, f"--out={out}", "--num=2", "--steps=2"])
    assert len(read_video(tmp_path / "cascade.stage0.mp4")[0]) == len(read_video(out)[0]) == 7
