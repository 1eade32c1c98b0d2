"""Runs that stop (SIGKILL, SIGTERM) resume exactly where they left off."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.train.helpers import checkpoint_steps, load_checkpoint_arrays, run, single_device_env, train_command

pytestmark = pytest.mark.slow
STEPS = ["train.num_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=5"]


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=single_device_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training exited early: {process.communicate()[1][-4000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for training")
        time.sleep(0.005)


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(train_command(straight, *STEPS))

    process = _start(train_command(resumed, *STEPS))
    _wait_for(lambda: 2 in checkpoint_steps(resumed), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint_steps(resumed)
    assert killed_at and max(killed_at) < 6, f"the run finished before it was killed: {killed_at}"

    log = run(train_command(resumed, *STEPS)).stderr
    assert f"Resumed from the checkpoint at step {max(killed_at)}" in log

    a, b = load_checkpoint_arrays(straight, 6), load_checkpoint_arrays(resumed, 6)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert any("/ema/" in name for name in a) and any("/opt_state/" in name for name in a)
    data_a = json.loads((straight / "checkpoints/6/data/metadata").read_text())
    data_b = json.loads((resumed / "checkpoints/6/data/metadata").read_text())
    assert data_a == data_b  # Same iterator position: the same batches were consumed.


def test_sigterm_saves_and_exits_zero_then_resumes(tmp_path):
    workdir = tmp_path / "run"
    long_run = ["train.num_steps=100000", "train.checkpoint_every=1000"]
    process = _start(train_command(workdir, *long_run))
    tensorboard = workdir / "tensorboard"
    _wait_for(lambda: tensorboard.exists() and any(p.stat().st_size > 200 for p in tensorboard.iterdir()), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]
    saved = checkpoint_steps(workdir)
    assert len(saved) == 1 and 0 < saved[0] < 1000
    log = run(train_command(workdir, f"train.num_steps={saved[0] + 2}", "train.checkpoint_every=1000")).stderr
    assert f"Resumed from the checkpoint at step {saved[0]}" in log
    assert max(checkpoint_steps(workdir)) == saved[0] + 2
