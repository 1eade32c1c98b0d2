"""A very small version of the tiny config and a way to run the CLI in a clean process."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from pyoco_jax.config import load_config

REPO = pathlib.Path(__file__).parents[2]
TINY = str(REPO / "configs" / "tiny.py")

# Small enough that a CPU step takes well under a second; same code paths as configs/tiny.py.
FAST = [
    "data.resolution=16",
    "data.num_frames=4",
    "data.global_batch_size=4",
    "model.block_out_channels=(8,16,16)",
    "model.num_attention_heads=2",
    "model.temporal.num_heads=2",
    "train.log_every=1",
    "train.sample_every=0",
    "sample.num_steps=3",
    "sample.num_samples=2",
    "optim.warmup_steps=2",
]


def fast_config(*overrides: str):
    return load_config(TINY, [*FAST, *overrides])


def train_command(workdir: pathlib.Path, *overrides: str) -> list[str]:
    args = [f"--config.{item}" for item in (*FAST, *overrides)]
    return [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={TINY}", f"--workdir={workdir}", *args]


def single_device_env() -> dict[str, str]:
    """The environment of a fresh process on one CPU device (no fake devices from conftest)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def load_checkpoint_arrays(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
    """Every array of the saved train state, by path, as numpy (no target tree needed)."""
    tree = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    flat = {}

    def visit(prefix, node):
        if isinstance(node, dict):
            for key, value in node.items():
                visit(f"{prefix}/{key}", value)
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                visit(f"{prefix}/{index}", value)
        elif node is not None:
            flat[prefix] = np.asarray(node)

    visit("", tree)
    return flat
