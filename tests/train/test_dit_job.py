"""The DiT backbone end to end through the CLIs: train, checkpoint, resume exactly, sample."""

import json
import pathlib
import sys

import numpy as np
import pytest

from tests.train.helpers import REPO, checkpoint_steps, load_checkpoint_arrays, run

pytestmark = pytest.mark.slow

TINY_DIT = str(REPO / "configs" / "tiny_dit.py")
# configs/tiny_dit.py made smaller; a constant learning rate, so runs of different lengths take the same steps.
FAST_DIT = [
    "data.num_frames=4",
    "data.global_batch_size=4",
    "model.dit.num_layers=2",
    "model.dit.ffn_dim=32",
    "model.dit.freq_dim=16",
    "optim.schedule=constant",
    "optim.warmup_steps=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "sample.num_steps=3",
    "sample.num_samples=2",
]


def _train(workdir: pathlib.Path, steps: int) -> str:
    overrides = [f"--config.{item}" for item in (*FAST_DIT, f"train.num_steps={steps}")]
    command = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={TINY_DIT}", f"--workdir={workdir}"]
    return run([*command, *overrides]).stderr


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if "loss" in record}


def test_dit_trains_resumes_exactly_and_samples(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(straight, 4)
    _train(resumed, 2)
    assert checkpoint_steps(resumed) == [2]
    assert "Resumed from the checkpoint at step 2" in _train(resumed, 4)

    assert _losses(straight) == _losses(resumed)  # Steps 3 and 4 after the restart too.
    a, b = load_checkpoint_arrays(straight, 4), load_checkpoint_arrays(resumed, 4)
    assert a.keys() == b.keys() and any("class_embedding" in name for name in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert (resumed / "samples" / "step_0000004.mp4").exists()

    out = tmp_path / "dit.mp4"
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={resumed}", f"--out={out}"]
    run([*command, "--num=2", "--steps=2", "--label=1", "--guidance=2.0"])
    assert out.exists() and out.stat().st_size > 0
