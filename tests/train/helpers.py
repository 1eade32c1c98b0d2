"""A very small version of the tiny config and a way to run the CLI in a clean process."""

import functools
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from pyoco_jax import parallel
from pyoco_jax.config import load_config
from pyoco_jax.data.loader import host_dataset, make_source
from pyoco_jax.train.build import build_run, sharded_step
from tests.xla_flags import QUICK_COMPILE_FLAG

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
    """The environment of a fresh process on one CPU device (no fake devices from conftest), compiled as tests are."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = QUICK_COMPILE_FLAG
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


# Sharded-training tests compile one step per mesh: a two-level model keeps each compile short (compile time
# grows with the number of layers), and XLA's backend optimisation is off for the same reason. Norm groups hold
# several channels: with one channel per group a conv bias is normalised away, its gradient is float noise, and
# Adam turns that noise into full-size steps of either sign, so runs that differ only in reduction order diverge.
SMALL = [
    "data.global_batch_size=8",
    "model.block_out_channels=(8,16)",
    "model.attention_levels=(False,True)",
    "model.temporal.levels=(1,)",
    "model.mid_block_attention=False",  # Level 1 has the spatial and temporal attention; the mid block need not.
    "model.temporal.mid=False",
    "model.norm_num_groups=4",
    "optim.schedule=constant",  # The step then does not depend on train.num_steps: runs of any length share it.
]


MESHES = {  # (data, fsdp, tensor) on the 8 fake CPU devices
    "1 device": (1, 1, 1),
    "data=8": (8, 1, 1),
    "data=2 fsdp=4": (2, 4, 1),
    "data=2 fsdp=2 tensor=2": (2, 2, 2),
}
SHARDED_STEPS = 3


def small_config(*overrides: str):
    return load_config(TINY, [*FAST, *SMALL, *overrides])


def small_train_command(workdir: pathlib.Path, *overrides: str) -> list[str]:
    """`train_command` for the small config; a key given twice keeps its last value (the CLI would join tuples)."""
    latest = {item.split("=", 1)[0]: item for item in (*FAST, *SMALL, *overrides)}
    args = [f"--config.{item}" for item in latest.values()]
    return [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={TINY}", f"--workdir={workdir}", *args]


def mesh_config(mesh_name: str):
    data, fsdp, tensor = MESHES[mesh_name]
    return small_config(f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}")


def make_test_mesh(mesh_name: str):
    return parallel.make_mesh(mesh_config(mesh_name).mesh, jax.devices()[: math.prod(MESHES[mesh_name])])


@functools.cache
def run_start():
    """The initial train state (on the host), the first global batches and one example, shared by every mesh."""
    config = mesh_config("1 device")
    parts = build_run(config)
    state = jax.device_get(jax.jit(lambda: parts.init_state(config))())
    source = make_source(config.data, seed=config.seed)
    stream = host_dataset(
        source, global_batch_size=config.data.global_batch_size, process_index=0, process_count=1, seed=config.seed
    )
    return state, [stream[n] for n in range(SHARDED_STEPS)], source[0]


@functools.cache
def train_on_mesh(mesh_name: str):
    """(losses, final state, run parts) after SHARDED_STEPS steps of the small config on `mesh_name`.

    Cached per mesh: test modules (and xdist workers, through the persistent compilation cache) share it.
    """
    config = mesh_config(mesh_name)
    initial, batches, example = run_start()
    parts = build_run(config)
    step = sharded_step(parts, config, make_test_mesh(mesh_name), example)
    state = jax.device_put(initial, step.state_sharding)
    losses = []
    for batch in batches:
        state, metrics = step.fn(state, jax.device_put(batch, step.batch_sharding))
        losses.append(float(metrics["loss"]))
    return losses, state, parts


def flat_arrays(tree) -> dict[str, np.ndarray]:
    """Every array of a pytree (e.g. a train state) as numpy, by its key path."""
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
