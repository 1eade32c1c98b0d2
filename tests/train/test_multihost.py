"""Two JAX processes on localhost (CPU, gloo) train through pyoco-train exactly like one process.

Each process has 4 CPU devices and loads its own half of every global batch; the mesh spans
both (DCN data axis across the processes, fsdp and sequence inside each). The losses and the
checkpoint they write match the single-device run of the same config (same tolerances as
test_sharded), and the checkpoint restores in this single process.
"""

import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from pyoco_jax import parallel
from pyoco_jax.train.checkpoint import Checkpointer, abstract_like
from tests.train.helpers import (
    SHARDED_STEPS,
    checkpoint_steps,
    flat_arrays,
    make_test_mesh,
    mesh_config,
    single_device_env,
    small_train_command,
    train_on_mesh,
)
from tests.xla_flags import host_devices_flags

pytestmark = pytest.mark.slow

MESH = ["mesh.dcn_data=2", "mesh.data=1", "mesh.fsdp=2", "mesh.sequence=2"]
RUN = [
    f"train.num_steps={SHARDED_STEPS}",
    "train.checkpoint_every=1000",
    "sample.sampler=euler",
    "sample.num_steps=1",
    "sample.num_samples=2",
    "sample.guidance_scale=1.0",  # One model call per sampling step: a smaller program to compile.
]


def _start(workdir, per_process: list[list[str]]) -> list[subprocess.Popen]:
    """One pyoco-train process per override list, joined into one run over a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    env = single_device_env()
    env["XLA_FLAGS"] = host_devices_flags(4)
    flags = [f"--coordinator={address}", f"--num_processes={len(per_process)}"]
    return [
        subprocess.Popen(
            [*small_train_command(workdir, *overrides), *flags, f"--process_id={index}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index, overrides in enumerate(per_process)
    ]


def _finish(processes: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each process; any still running at the timeout is killed."""
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


def _launch(workdir, per_process: list[list[str]], timeout: float = 600) -> list[tuple[int, str, str]]:
    return _finish(_start(workdir, per_process), timeout)


def test_two_processes_train_like_one_and_their_checkpoint_restores_here(tmp_path):
    results = _launch(tmp_path, [[*MESH, *RUN]] * 2)
    for code, _, err in results:
        assert code == 0, err[-4000:]
    assert "process 0 of 2 (flags)" in results[0][1] + results[0][2]

    reference_losses, reference, parts = train_on_mesh("1 device")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == SHARDED_STEPS  # Only process 0 logs.
    np.testing.assert_allclose([json.loads(line)["loss"] for line in lines], reference_losses, rtol=1e-5)
    assert list((tmp_path / "samples").iterdir())

    assert checkpoint_steps(tmp_path) == [SHARDED_STEPS]
    rules = parallel.logical_rules(mesh_config("1 device").mesh)
    one_device = parallel.state_shardings(parts.abstract_state, make_test_mesh("1 device"), rules)
    checkpointer = Checkpointer(str(tmp_path))
    restored, _ = checkpointer.restore(SHARDED_STEPS, abstract_like(parts.abstract_state, one_device))
    checkpointer.close()
    expected, saved = flat_arrays(reference), flat_arrays(restored)
    assert expected.keys() == saved.keys()
    for name, want in expected.items():
        scale = max(float(np.abs(want).max()), 1e-3) if want.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(saved[name], want, rtol=0, atol=5e-5 * scale, err_msg=name)


def test_processes_with_different_configs_stop_with_the_difference_named(tmp_path):
    results = _launch(tmp_path, [[*MESH, *RUN], [*MESH, *RUN, "optim.learning_rate=0.002"]], timeout=300)
    for code, _, err in results:
        assert code != 0
        assert "disagree" in err and "optim.learning_rate" in err and "process 1 has 0.002" in err, err[-3000:]
        assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "checkpoints")


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    """Preemption notices reach hosts one by one; all must save the same step, or the rest would hang."""
    long_run = [*MESH, *RUN, "train.num_steps=100000", "train.log_every=1"]
    processes = _start(tmp_path, [long_run] * 2)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 400
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert all(p.poll() is None for p in processes), _finish(processes)[0][2][-4000:]
        assert time.time() < deadline, "timed out waiting for training"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)
    results = _finish(processes, timeout=300)
    for code, _, err in results:
        assert code == 0, err[-4000:]
    (saved,) = checkpoint_steps(tmp_path)
    assert 2 <= saved < 100000
    for _, _, err in results:
        assert f"every process saves step {saved} and exits" in err, err[-3000:]
