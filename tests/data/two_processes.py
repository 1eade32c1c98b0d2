"""Runs a worker script as two JAX processes of one CPU cluster (2 host devices each) and reads their results."""

import json
import os
import socket
import subprocess
import sys

from tests.xla_flags import host_devices_flags


def run_two_processes(tmp_path, worker_source: str, extra_args: list[list[str]]) -> list[dict]:
    """Each process runs `worker_source` with (coordinator address, process id, *extra_args[p]) and prints one
    `RESULT <json>` line; returns the two results, process 0 first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    script = tmp_path / "worker.py"
    script.write_text(worker_source)
    env = dict(os.environ, XLA_FLAGS=host_devices_flags(2), JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), address, str(p), *extra_args[p]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in (0, 1)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
        line = next(x for x in out.decode().splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
    return results
