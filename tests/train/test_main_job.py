"""The README's main job in small: train, watch the loss fall, then sample an mp4 from the checkpoint."""

import json
import re
import subprocess
import sys

import av
import numpy as np
import pytest

from pyoco_jax.data.video_io import video_grid
from pyoco_jax.train import trainer
from pyoco_jax.train.trainer import NonFiniteLossError, train
from tests.train.helpers import checkpoint_steps, fast_config, run, single_device_env

pytestmark = pytest.mark.slow


def test_loss_falls_and_outputs_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # The real FVD statistics' cache of synthetic data.
    monkeypatch.setattr(trainer, "local_peak_flops", lambda: 1e15)  # As on a chip in train/hardware.py's table.
    config = fast_config(
        "data.global_batch_size=8",
        "train.num_steps=100",
        "train.checkpoint_every=50",
        "optim.learning_rate=2e-3",
        "train.eval_every=50",
        "train.eval_metric=fvd",
        "train.eval_protocol=fvd8_4f",  # In-loop evaluation, as pyoco-eval (8 clips: checks it runs, no more).
    )
    train(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    assert len(losses) == 100
    logged = [record for record in records if "loss" in record]
    for record in logged:  # The step's model FLOPs over the (pretended) chip peak of 1 PFLOP/s.
        assert record["model_tflops_per_device"] > 0
        assert record["mfu"] == pytest.approx(record["model_tflops_per_device"] / 1000, rel=1e-6)
    evaluated = [record for record in records if "eval/fvd" in record]
    assert [record["step"] for record in evaluated] == [50, 100]
    assert all(r["eval/fvd"] > 0 and r["eval/seconds"] > 0 for r in evaluated)
    assert json.loads((tmp_path / "eval" / "step_0000050.json").read_text())["eval/fvd"] > 0
    assert len(list((tmp_path / "home" / ".cache" / "pyoco_jax" / "fvd_stats").glob("*_fvd8_4f_seed0.npz"))) == 1
    start, end = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert end < 0.65 * start, (start, end)
    assert checkpoint_steps(tmp_path) == [50, 100]
    assert list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "samples" / "step_0000100.mp4").exists()
    assert (tmp_path / "samples" / "step_0000100.gif").exists()

    out = tmp_path / "cli_sample.mp4"
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={tmp_path}", f"--out={out}"]
    printed = run([*command, "--num=2", "--steps=2", "--label=1", "--guidance=2.0", "--shape_accuracy"]).stdout
    assert re.search(r"shape accuracy: \d+\.\d% of 2 clips show the requested shape \(chance 25%", printed), printed
    assert re.search(r"colour drift: \d\.\d{3} .*; real clips 0\.00\d\)", printed), printed
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(config.sample.fps)
    assert len(frames) == config.data.num_frames

    evaluate = [sys.executable, "-m", "pyoco_jax.cli.eval", f"--workdir={tmp_path}"]
    printed = run([*evaluate, "--metric=shape", "--num=4", "--batch=4"]).stdout
    assert re.search(r"shape accuracy: \d+\.\d% of 4 clips show the requested shape", printed), printed
    printed = run([*evaluate, "--metric=is", "--num=8", "--batch=8"]).stdout
    scored = json.loads(printed.splitlines()[-1])
    assert 1 <= scored["eval/is_low95"] <= scored["eval/is"] <= scored["eval/is_high95"] <= config.model.num_classes
    written = json.loads((tmp_path / "eval" / "step_0000100.json").read_text())
    assert written["step"] == 100 and 0 <= written["eval/shape_accuracy"] <= 1 and written["eval/is"] >= 1
    assert written["eval/fvd"] == evaluated[-1]["eval/fvd"]  # Every metric of a step lands in one file.
    result = subprocess.run([*evaluate, "--protocol=fvd9_9f"], env=single_device_env(), capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "pyoco-eval: unknown FVD protocol 'fvd9_9f'" in result.stderr, result.stderr[-2000:]
    side = config.data.resolution
    _, grid_h, grid_w, _ = video_grid(np.zeros((2, 1, side, side, 3), np.uint8), cols=2).shape
    assert grid_w > 2 * side  # Two samples side by side, with a gap.
    assert frames[0].shape == (grid_h + grid_h % 2, grid_w + grid_w % 2, 3)  # mp4 (yuv420p) pads odd sides.


def test_sample_cli_explains_a_missing_checkpoint(tmp_path):
    command = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={tmp_path}", f"--out={tmp_path}/x.mp4"]
    result = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no checkpoint" in result.stderr


def test_train_cli_rejects_a_bad_config_before_compiling(tmp_path):
    from tests.train.helpers import train_command

    command = train_command(tmp_path, "noise.alpha=-1")
    result = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "noise.alpha" in result.stderr and "Traceback" not in result.stderr
    assert checkpoint_steps(tmp_path) == []


def test_repeated_non_finite_losses_stop_with_a_clear_message(tmp_path):
    exploding = ("optim.learning_rate=1e30", "optim.grad_clip_norm=0.0", "optim.max_nonfinite_steps=3")
    config = fast_config("data.global_batch_size=8", *exploding)
    config.train.num_steps = 50
    with pytest.raises(NonFiniteLossError, match="optim.learning_rate"):
        train(config, str(tmp_path))
