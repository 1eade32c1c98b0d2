"""An installed libtpu stays quiet on a machine without accelerators, and stays out of the way of real ones."""

import importlib.util
import os
import subprocess
import sys

import jax
import pytest

from pyoco_jax import platforms


@pytest.fixture
def no_platforms_named(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(platforms.importlib.util, "find_spec", lambda name: object() if name == "libtpu" else None)
    monkeypatch.setattr(jax.config, "update", lambda *args: None)  # This process's JAX has started already.
    return monkeypatch


@pytest.mark.parametrize(
    ("tpu", "gpu_files", "expected"),
    [(False, (), "cpu"), (True, (), None), (False, ("/dev/nvidiactl",), None)],
)
def test_cpu_alone_only_where_there_is_no_accelerator(no_platforms_named, tpu, gpu_files, expected):
    no_platforms_named.setattr(platforms, "tpu_chips_present", lambda: tpu)
    no_platforms_named.setattr(platforms.os.path, "exists", lambda path: path in gpu_files)
    platforms.start_cpu_alone_without_accelerators()
    assert os.environ.get("JAX_PLATFORMS") == expected


def test_a_users_platforms_are_kept(no_platforms_named):
    no_platforms_named.setenv("JAX_PLATFORMS", "cuda")
    no_platforms_named.setattr(platforms, "tpu_chips_present", lambda: False)
    platforms.start_cpu_alone_without_accelerators()
    assert os.environ["JAX_PLATFORMS"] == "cuda"


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_starting_jax_with_libtpu_installed_logs_no_error():
    env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
    code = "import pyoco_jax, jax; print(jax.devices()[0].platform)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "cpu" and "TPU_WORKER_HOSTNAMES" not in result.stderr, result.stderr
