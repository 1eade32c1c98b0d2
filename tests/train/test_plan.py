"""AOT plans: `pyoco-train --plan` compiles the real step for a topology and reports memory, FLOPs and fit."""

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pyoco_jax import parallel
from pyoco_jax.config import load_config
from pyoco_jax.train.build import build_run
from pyoco_jax.train.flops import matmul_flops
from pyoco_jax.train.hardware import CHIPS
from pyoco_jax.train.plan import (
    Plan,
    PlanDoesNotFit,
    TopologyError,
    compile_step,
    format_plan,
    make_plan,
    target,
)
from tests.train.helpers import FAST, TINY, single_device_env

# One U-Net level: the plan compiles the whole training step, and compile time grows with the layers.
PLAN_MODEL = [
    *FAST,
    "data.global_batch_size=8",
    "model.block_out_channels=(8,)",
    "model.attention_levels=(False,)",
    "model.temporal.levels=(0,)",
    "model.temporal.mid=False",
    "mesh.fsdp=2",
    "mesh.tensor=2",
]


def _overrides(*extra: str) -> list[str]:
    return list({item.split("=", 1)[0]: item for item in (*PLAN_MODEL, *extra)}.values())


def _plan_cli(topology: str, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={TINY}", f"--plan={topology}"]
    command += [f"--config.{item}" for item in _overrides()]
    return subprocess.run(command, env=single_device_env(), cwd=cwd, capture_output=True, text=True, timeout=600)


def _bytes(report: str, label: str) -> float:
    value, unit = re.search(rf"^\s*{label}\s+([\d.]+) (GiB|MiB|KiB|B)\b", report, re.MULTILINE).groups()
    return float(value) * {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "B": 1}[unit]


@pytest.mark.slow
def test_cpu_plan_prints_memory_flops_and_fit_and_does_not_train(tmp_path):
    result = _plan_cli("cpu:8", tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    report = result.stdout
    assert "Plan for cpu:8: 8 devices, mesh {'data': 2, 'fsdp': 2, 'tensor': 2, 'sequence': 1}" in report
    assert "fits: n/a" in report and "step time / MFU: n/a" in report
    flops = float(re.search(r"FLOPs\s+([\d.e+]+)", report).group(1))
    assert flops > 1e6
    # Per-device state sizes are the sharded ones, as computed here from the same rules on 8 devices.
    config = load_config(TINY, _overrides())
    parts = build_run(config)
    shardings = parallel.state_shardings(
        parts.abstract_state, parallel.make_mesh(config.mesh), parallel.logical_rules(config.mesh)
    )
    for label, field in (("params", "params"), ("optimizer state", "opt_state"), ("EMA", "ema")):
        expected = parallel.bytes_per_device(getattr(parts.abstract_state, field), getattr(shardings, field))
        assert _bytes(report, label) == pytest.approx(expected, rel=0.01, abs=8)
    full = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(parts.abstract_state.params))
    assert _bytes(report, "params") < 0.5 * full  # fsdp x tensor really split the params
    assert _bytes(report, "total") >= _bytes(report, "arguments") + _bytes(report, "activations/temp") - 1024
    assert list(tmp_path.iterdir()) == []  # No workdir, checkpoint or log: nothing was trained.


def test_bad_topologies_are_refused_with_what_to_write():
    with pytest.raises(TopologyError, match=r"expected cpu:N, or v4\|v5e\|v5p\|v6e:AxB"):
        target("tpu-v5:2x2")
    with pytest.raises(TopologyError, match="needs 64 host devices.*xla_force_host_platform_device_count=64"):
        target("cpu:64")
    with pytest.raises(TopologyError, match="expected"):
        target("v5p:2x2x1x1")


@pytest.mark.slow
def test_cli_exits_with_the_message_for_a_bad_topology(tmp_path):
    result = _plan_cli("v5x:2x2", tmp_path)
    assert result.returncode != 0 and "unknown topology 'v5x:2x2'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_tpu_plan_compiles_for_a_v5e_slice_without_tpus():
    config = load_config(TINY, _overrides("model.dtype=bfloat16", "mesh.tensor=1"))
    plan = make_plan(config, "v5e:2x2")
    assert plan.num_devices == 4 and plan.chip.name == "TPU v5e" and plan.mesh["fsdp"] == 2
    assert plan.flops > 1e6 and plan.temp_bytes > 0 and plan.total_bytes < plan.hbm_bytes
    compute, memory, step = plan.roofline
    assert step == max(compute, memory) > 0
    report = format_plan(plan, config)
    assert "fits in HBM: yes" in report and "implied MFU" in report
    # libtpu's start-up variables are gone again: left behind, children would take this for a TPU host.
    assert "TPU_WORKER_HOSTNAMES" not in os.environ


def _layer(x, w):
    return jnp.tanh(x @ w)


def _scanned(w, x, remat: bool):
    layer = jax.checkpoint(_layer) if remat else _layer
    return jax.lax.scan(lambda c, w_layer: (layer(c, w_layer), None), x, w)[0].sum()


def _unrolled(w, x):
    for layer in range(w.shape[0]):
        x = _layer(x, w[layer])
    return x.sum()


def test_matmul_flops_count_every_scanned_layer_and_the_recomputation():
    w, x = jax.ShapeDtypeStruct((6, 32, 32), jnp.float32), jax.ShapeDtypeStruct((16, 32), jnp.float32)
    per_matmul = 2 * 16 * 32 * 32
    forward = jax.make_jaxpr(lambda w, x: _scanned(w, x, False))(w, x)
    assert matmul_flops(forward) == 6 * per_matmul
    # Backward: the gradients of x and of w, one matmul each per layer; remat adds the forward again.
    for remat, per_layer in ((False, 3), (True, 4)):
        traced = jax.jit(jax.grad(lambda w, x, r=remat: _scanned(w, x, r), argnums=(0, 1))).trace(w, x)
        assert matmul_flops(traced.jaxpr) == 6 * per_layer * per_matmul
    # XLA counts the scan's body once; unrolled, its count (matmuls plus a little elementwise work) agrees.
    scanned = jax.jit(jax.grad(lambda w, x: _scanned(w, x, False), argnums=(0, 1))).trace(w, x)
    assert scanned.lower().compile().cost_analysis()["flops"] < 4 * per_matmul
    unrolled = jax.jit(jax.grad(_unrolled, argnums=(0, 1))).trace(w, x)
    compiled = unrolled.lower().compile().cost_analysis()["flops"]
    assert matmul_flops(unrolled.jaxpr) == 18 * per_matmul == pytest.approx(compiled, rel=0.1)


def test_matmul_flops_count_a_pallas_kernel_once_per_grid_cell():
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    heads, length, head_dim, block = 2, 1024, 128, 256
    sizes = dict.fromkeys(("q", "kv", "kv_compute", "q_dkv", "kv_dkv", "kv_dkv_compute", "q_dq", "kv_dq"), block)
    splash = kernel.make_splash_mha(
        masks.MultiHeadMask([masks.FullMask((length, length))] * heads),
        block_sizes=kernel.BlockSizes(**{f"block_{name}": size for name, size in sizes.items()}),
        head_shards=1,
        q_seq_shards=1,
    )
    q = jax.ShapeDtypeStruct((heads, length, head_dim), jnp.bfloat16)
    # Traced only (a TPU kernel): q @ k^T and p @ v over all (length / block)^2 block pairs of every head.
    traced = jax.make_jaxpr(lambda q, k, v, w: splash(q, k, v) @ w)(q, q, q, jax.ShapeDtypeStruct((128, 64), q.dtype))
    projection = 2 * heads * length * head_dim * 64
    assert matmul_flops(traced) == 4 * heads * length**2 * head_dim + projection
    assert matmul_flops(traced, kernels=False) == projection  # What XLA's cost analysis sees of it.


def test_the_roofline_scales_compiled_bytes_by_loops_not_by_kernels_the_compiler_cannot_count():
    figures = {field.name: 0 for field in dataclasses.fields(Plan)}
    figures.update(chip=CHIPS["v5p"], devices_per_chip=1, flops=1e12, bytes_accessed=1e9, model_flops=1e12)
    unrolled = Plan(**figures | {"program_flops": 3e12, "kernel_flops": 2e12})  # 1e12 outside kernels, as compiled
    assert unrolled.loop_factor == 1.0
    scanned = Plan(**figures | {"program_flops": 5e12, "kernel_flops": 2e12})  # a loop's body counted once of 3
    assert scanned.loop_factor == 3.0
    assert scanned.roofline[1] == pytest.approx(3 * 1e9 / CHIPS["v5p"].hbm_bytes_per_second)


def test_matmul_flops_count_a_shard_map_body_once_per_device():
    mesh = jax.make_mesh((2, 4), ("rows", "other"), devices=jax.devices()[:8])
    local = jax.shard_map(
        lambda a, b: a @ b, mesh=mesh, in_specs=(P("rows"), P()), out_specs=P("rows"), check_vma=False
    )
    a = jax.ShapeDtypeStruct((16, 32), jnp.float32, sharding=NamedSharding(mesh, P("rows")))
    b = jax.ShapeDtypeStruct((32, 8), jnp.float32, sharding=NamedSharding(mesh, P()))
    # Each of the 8 devices multiplies its 8 rows (the 4 devices along `other` repeat the same rows).
    assert matmul_flops(jax.jit(local).trace(a, b).jaxpr) == 8 * 2 * 8 * 32 * 8


class _FailingCompile:
    """Stands for a traced step whose compile raises `message` (as libtpu does when the step does not fit)."""

    def __init__(self, message: str):
        self.message = message

    def lower(self):
        return self

    def compile(self):
        raise jax.errors.JaxRuntimeError(self.message)


def test_a_step_too_big_for_hbm_is_refused_with_the_compilers_figure_and_what_to_change():
    hbm = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (25.95T) "
        "exceeds available HBM (95.74G)."
    )
    with pytest.raises(PlanDoesNotFit, match=r"does not fit on v5p:2x2x1: .*\(25\.95T\) .*model\.remat=full"):
        compile_step(_FailingCompile(hbm), "v5p:2x2x1")
    # Anything else (here a kernel's scratch memory) is not the step's size: it stays a bug with its traceback.
    with pytest.raises(jax.errors.JaxRuntimeError, match="smem"):
        compile_step(_FailingCompile("RESOURCE_EXHAUSTED: Ran out of memory in memory space smem."), "v5p:2x2x1")
