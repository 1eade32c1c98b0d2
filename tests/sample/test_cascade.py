"""The cascade end to end at toy size: a base run, a temporal-interpolation stage and a super-resolution stage
are trained a few steps each, then chained in process and through `pyoco-sample --cascade`."""

import sys

import av
import jax.numpy as jnp
import numpy as np
import pytest

from pyoco_jax.conditioning import downsample
from pyoco_jax.sample.cascade import run_cascade
from pyoco_jax.sample.run_sampler import load_run_sampler
from pyoco_jax.train.trainer import train
from pyoco_jax.video_range import video_to_model_range
from tests.train.helpers import fast_config, run

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
        "condition.frames=interpolation",
        "condition.interpolation_factor=2",
        "model.condition_channels=4",
        *AUGMENTED,
    ),
    "super_resolution": ("data.resolution=16", "condition.low_res_factor=2", "model.condition_channels=3", *AUGMENTED),
}


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cascade")
    for name, overrides in STAGES.items():
        train(fast_config(*overrides, *STEPS), str(root / name))
    return {name: str(root / name) for name in STAGES}


def test_interpolation_keeps_the_keyframes_and_super_resolution_downsamples_to_its_input(stage_dirs):
    base, *stages = (load_run_sampler(stage_dirs[name]) for name in STAGES)
    (coarse, filled, sharp), labels = run_cascade(base, stages, num=2, seed=0)
    assert coarse.shape == (2, 4, 8, 8, 3) and filled.shape == (2, 7, 8, 8, 3) and sharp.shape == (2, 7, 16, 16, 3)
    np.testing.assert_array_equal(filled[:, ::2], coarse)  # Given frames come out unchanged, bit for bit.
    round_trip = np.abs(np.asarray(downsample(video_to_model_range(jnp.asarray(sharp)), 2)) * 127.5
                        - np.asarray(video_to_model_range(jnp.asarray(filled))) * 127.5)  # fmt: skip
    print(f"SR round trip: mean {round_trip.mean():.3f}, max {round_trip.max():.3f} levels of 255")
    assert round_trip.max() <= 0.5 + 1e-3  # Rounding each output pixel to uint8 moves a block mean by <= 0.5 level.
    assert labels.shape == (2,)


def test_the_sample_cli_runs_the_cascade_and_writes_every_stage(stage_dirs, tmp_path):
    out = tmp_path / "cascade.mp4"
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={stage_dirs['base']}", f"--out={out}"]
    cascade = [f"--cascade={stage_dirs['interpolation']}", f"--cascade={stage_dirs['super_resolution']}"]
    run([*command, *cascade, "--num=2", "--steps=2"])
    counts = {}
    for path in (tmp_path / "cascade.stage0.mp4", tmp_path / "cascade.stage1.mp4", out):
        with av.open(str(path)) as container:
            counts[path.name] = sum(1 for _ in container.decode(video=0))
    assert counts == {"cascade.stage0.mp4": 4, "cascade.stage1.mp4": 7, "cascade.mp4": 7}
