"""Collectives read from compiled HLO: bytes, groups and loop counts against hand-computed figures, and the plan's
second step-time bound (roofline + collectives) against its closed form."""

import dataclasses
import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pyoco_jax.config import load_config
from pyoco_jax.train.collectives import Collective, CollectiveSummary, array_bytes, hlo_collectives
from pyoco_jax.train.hardware import CHIPS
from pyoco_jax.train.plan import Plan, format_plan, target
from tests.train.helpers import TINY

# Every spelling the parser reads: explicit, iota and mesh replica groups, an async pair, an op wrapped in
# async-start, TPU's reduce-scatter fusion, a loop with a stated trip count, one whose count is only in its
# condition (as TPU prints scans) and one with neither.
HLO = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[64,8]{1,0})->f32[8,8]{1,0}}, \
num_partitions=8

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%counted_body (p: (s32[], f32[2,8])) -> (s32[], f32[2,8]) {
  %p = (s32[], f32[2,8]{1,0}) parameter(0)
  %shard = f32[2,8]{1,0} get-tuple-element(%p), index=1
  %gathered = bf16[16,8]{1,0} all-gather(%shard), channel_id=1, replica_groups=[2,4]<=[8], dimensions={0}
  %ars = f32[4,8]{1,0} all-reduce-start(%shard), channel_id=2, replica_groups={{0,1},{2,3},{4,5},{6,7}}, \
to_apply=%add
  %ard = f32[4,8]{1,0} all-reduce-done(%ars)
  ROOT %out = (s32[], f32[2,8]{1,0}) tuple(%i, %shard)
}

%counted_cond (p.1: (s32[], f32[2,8])) -> pred[] {
  %p.1 = (s32[], f32[2,8]{1,0}) parameter(0)
  ROOT %go = pred[] fusion(%p.1), kind=kLoop, calls=%wrapped_compare
}

%all-reduce-scatter.3 (input: f32[32,8]) -> f32[4,8] {
  %input = f32[32,8]{1,0} parameter(0)
  %reduced = f32[32,8]{1,0:T(8,128)} all-reduce(%input), replica_groups=mesh['x'=2,'y'=4] {'x','y'}, to_apply=%add
  ROOT %mine = f32[4,8]{1,0} dynamic-slice(%reduced, %i, %j), dynamic_slice_sizes={4,8}
}

%scan_body (q: (s32[], f32[32,8])) -> (s32[], f32[32,8]) {
  %q = (s32[], f32[32,8]{1,0}) parameter(0)
  %grad = f32[32,8]{1,0} get-tuple-element(%q), index=1
  %fusion.9 = f32[4,8]{1,0} fusion(%grad), kind=kCustom, calls=%all-reduce-scatter.3
  ROOT %out.1 = (s32[], f32[32,8]{1,0}) tuple(%k, %grad)
}

%scan_cond (q.1: (s32[], f32[32,8])) -> pred[] {
  %limit = s32[]{:T(128)} constant(6)
  %q.1 = (s32[], f32[32,8]{1,0}) parameter(0)
  %counter = s32[]{:T(128)} get-tuple-element(%q.1), index=0
  ROOT %lt = pred[]{:T(512)} compare(%counter, %limit), direction=LT
}

%wrapped_all_to_all (a2a: f32[8,16]) -> f32[8,16] {
  %a2a = f32[8,16]{1,0} parameter(0)
  ROOT %exchanged = f32[8,16]{1,0} all-to-all(%a2a), replica_groups=mesh['x'=2,'y'=4] {'y'}, dimensions={0}
}

%open_body (r: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %r = (s32[], f32[8,16]{1,0}) parameter(0)
  %rows = f32[8,16]{1,0} get-tuple-element(%r), index=1
  %a2a-start = ((f32[8,16]{1,0}), f32[8,16]{1,0}) async-start(%rows), calls=%wrapped_all_to_all
  %a2a-done = f32[8,16]{1,0} async-done(%a2a-start)
  ROOT %out.2 = (s32[], f32[8,16]{1,0}) tuple(%m, %a2a-done)
}

%open_cond (r.1: (s32[], f32[8,16])) -> pred[] {
  %r.1 = (s32[], f32[8,16]{1,0}) parameter(0)
  ROOT %again = pred[] custom-call(%r.1), custom_call_target="decide"
}

ENTRY %main (a: f32[64,8]) -> f32[8,8] {
  %a = f32[64,8]{1,0} parameter(0)
  %scattered = f32[8,8]{1,0} reduce-scatter(%a), channel_id=3, replica_groups={}, dimensions={0}, to_apply=%add
  %cps = (f32[8,8]{1,0}, f32[8,8]{1,0}, u32[], u32[]) collective-permute-start(%scattered), \
source_target_pairs={{0,1},{1,0}}
  %cpd = f32[8,8]{1,0} collective-permute-done(%cps)
  %loop = (s32[], f32[2,8]{1,0}) while(%t), condition=%counted_cond, body=%counted_body, \
backend_config={"known_trip_count":{"n":"3"},"known_init_step":{"init":"0","step":"1"}}
  %scan = (s32[], f32[32,8]{1,0}) while(%t.1), condition=%scan_cond, body=%scan_body
  %open = (s32[], f32[8,16]{1,0}) while(%t.2), condition=%open_cond, body=%open_body
  ROOT %result = f32[8,8]{1,0} copy(%cpd)
}
"""


def test_the_parser_reads_bytes_groups_async_pairs_and_trip_counts_from_hand_written_hlo():
    summary = hlo_collectives(HLO)
    assert sorted(summary.ops, key=lambda op: (op.kind, op.count)) == [
        Collective("all-gather", 16 * 8 * 2, 4, 3),  # bf16 result; iota groups [2,4]; trip count 3
        Collective("all-reduce", 4 * 8 * 4, 2, 3),  # the -done's result, the -start's groups
        Collective("all-to-all", 8 * 16 * 4, 4, 1, per_iteration=True),  # mesh axis y; a loop of unknown count
        Collective("collective-permute", 8 * 8 * 4, 2, 1),
        Collective("reduce-scatter", 8 * 8 * 4 * 8, 8, 1),  # operand = result x group; no groups = all 8
        Collective("reduce-scatter", 32 * 8 * 4, 8, 6),  # TPU's fusion; axes x and y; count from `counter < 6`
    ]
    assert summary.per_iteration_ops == 1
    assert summary.bytes_by_kind()["reduce-scatter"] == 2048 + 6 * 1024
    bandwidth = 1e9
    expected = {
        "all-reduce": 3 * 2 * (1 / 2) * 128,
        "all-gather": 3 * (3 / 4) * 256,
        "reduce-scatter": (7 / 8) * 2048 + 6 * (7 / 8) * 1024,
        "all-to-all": (3 / 4) * 512,
        "collective-permute": 256,
    }
    got = summary.seconds_by_kind(bandwidth)
    assert list(got) == list(expected)  # KINDS order
    for kind, seconds in expected.items():
        assert got[kind] == pytest.approx(seconds / bandwidth)
    assert summary.seconds(bandwidth) == pytest.approx(sum(expected.values()) / bandwidth)


def test_shapes_count_every_array_of_a_tuple_and_a_group_of_one_costs_nothing():
    assert array_bytes("(f32[8,64]{1,0}, bf16[3]{0}, pred[], s4[4])") == 8 * 64 * 4 + 6 + 1 + 2
    assert Collective("all-reduce", 1e6, 1, 10).seconds(1e9) == 0.0
    with pytest.raises(ValueError, match="no ENTRY computation"):
        hlo_collectives("HloModule empty")


KERNEL_THEN_GATHER = """HloModule jit_step, num_partitions=4

ENTRY %main (p: bf16[2,128]) -> bf16[8,128] {
  %p = bf16[2,128]{1,0} parameter(0)
  %kernel = bf16[2,128]{1,0} custom-call(%p), custom_call_target="tpu_custom_call", frontend_attributes={m={
"xprof_metadata":"{\\"block_q\\": 512}"
}}, metadata={op_name="jit(step)/splash"}
  ROOT %gathered = bf16[8,128]{1,0} all-gather(%kernel), replica_groups=[1,4]<=[4], dimensions={0}
}
"""


def test_a_kernel_attribute_spanning_lines_does_not_hide_what_follows_it():
    # Splash's metadata continues on unindented lines; the v5p plan of configs/sd15_latent.py lost 884 of its
    # 900 all-gathers when such a line was read as the end of the computation.
    assert hlo_collectives(KERNEL_THEN_GATHER).ops == (Collective("all-gather", 8 * 128 * 2, 4, 1),)


def _compiled_step(weight_spec: P, *, layers: int | None = None, devices: list | None = None, width: int = 64):
    """SGD on a tanh layer (or a scan over `layers` of `width` x `width`) with a batch split over the devices."""
    mesh = Mesh(np.array(devices or jax.devices()[:8]), ("data",))

    def loss(w, x):
        if layers is None:
            return jnp.tanh(x @ w).sum()
        return jax.lax.scan(lambda h, w_layer: (jnp.tanh(h @ w_layer), None), x, w)[0].sum()

    shape = (width, 32) if layers is None else (layers, width, width)
    w = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=NamedSharding(mesh, weight_spec))
    x = jax.ShapeDtypeStruct((64, width), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    step = jax.jit(lambda w, x: w - 0.1 * jax.grad(loss)(w, x), out_shardings=NamedSharding(mesh, weight_spec))
    return step.lower(w, x).compile()


def test_data_parallel_gradients_are_one_all_reduce_of_the_parameters_bytes():
    summary = hlo_collectives(_compiled_step(P()).as_text())
    assert summary.ops == (Collective("all-reduce", 64 * 32 * 4, 8, 1),)


def test_an_fsdp_weight_is_gathered_whole_and_its_gradient_reduced_whole():
    summary = hlo_collectives(_compiled_step(P("data")).as_text())
    weight = 64 * 32 * 4
    assert summary.bytes_by_kind()["all-gather"] == weight
    assert all(op.group_size == 8 and op.count == 1 for op in summary.ops)
    # XLA:TPU fuses the gradient's reduction into a reduce-scatter (see the hand-written HLO); XLA:CPU
    # all-reduces the whole gradient and keeps its shard. Either moves the whole weight's bytes through the ring.
    kinds = summary.bytes_by_kind()
    assert kinds.get("all-reduce", 0) + kinds.get("reduce-scatter", 0) == weight
    assert set(kinds) <= {"all-gather", "all-reduce", "reduce-scatter"}


def test_collectives_in_a_scan_over_layers_count_once_per_layer():
    layers, weight = 5, 64 * 64 * 4
    summary = hlo_collectives(_compiled_step(P(None, "data"), layers=layers).as_text())
    assert summary.per_iteration_ops == 0  # XLA:CPU states the trip count
    kinds = summary.bytes_by_kind()
    assert kinds["all-gather"] == 2 * layers * weight  # gathered in the forward scan and again in the backward
    assert kinds.get("all-reduce", 0) + kinds.get("reduce-scatter", 0) == layers * weight


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_a_tpu_scan_counts_its_fused_reduce_scatters_once_per_layer():
    layers, width = 5, 1024  # at 64 wide XLA:TPU all-reduces the gradient instead of fusing a reduce-scatter
    devices = target("v5p:2x2x1").devices  # compiled by libtpu for 4 v5p chips, none needed here
    step = _compiled_step(P(None, "data"), layers=layers, devices=devices, width=width)
    summary = hlo_collectives(step.as_text())
    assert summary.per_iteration_ops == 0  # the count is read from each loop's `counter < 5`
    assert summary.bytes_by_kind()["reduce-scatter"] == layers * width * width * 4  # the float32 gradient
    assert {op.group_size for op in summary.ops} == {4}
    gathers = [op for op in summary.ops if op.kind == "all-gather"]
    assert len(gathers) == 2 and all(op.count == layers for op in gathers)  # forward and backward scans


def test_the_plan_reports_collectives_and_a_no_overlap_bound_next_to_the_roofline():
    figures = {field.name: 0 for field in dataclasses.fields(Plan)}
    ops = (Collective("all-reduce", 2**30, 4, 2), Collective("all-gather", 2**20, 4, 1, per_iteration=True))
    chip = CHIPS["v5p"]
    figures.update(
        topology="v5p:2x2x1",
        num_devices=4,
        mesh={"data": 4},
        state_bytes=dict.fromkeys(("params", "frozen", "opt_state", "ema"), 0),
        flops=1e12,
        program_flops=1e12,
        model_flops=1e12,
        bytes_accessed=1e9,
        frames_per_step=64,
        chip=chip,
        devices_per_chip=1,
        attention_kernels=(),
        collectives=CollectiveSummary(ops),
    )
    plan = Plan(**figures)
    collective = (2 * 2 * 0.75 * 2**30 + 0.75 * 2**20) / chip.interconnect_bytes_per_second
    assert plan.collective_seconds == pytest.approx(collective)
    compute = 1e12 / chip.peak_bf16_flops
    assert plan.roofline[2] == pytest.approx(compute)  # compute-bound: 1 GB of HBM traffic is faster
    assert plan.step_without_overlap == pytest.approx(compute + collective)
    assert plan.mfu_without_overlap == pytest.approx(compute / (compute + collective))
    report = format_plan(plan, load_config(TINY, []))
    assert f"no overlap) {(compute + collective) * 1e3:.3f} ms" in report
    assert f"implied MFU {compute / (compute + collective):.1%} (no overlap" in report
    assert "implied MFU 100.0% (roofline" in report
    all_reduce_ms = 2 * 2 * 0.75 * 2**30 / chip.interconnect_bytes_per_second * 1e3
    assert re.search(rf"all-reduce +x 2 +2\.00 GiB +{all_reduce_ms:.3f} ms", report)
    assert re.search(r"all-gather +x 1 +1\.00 MiB +0\.001 ms", report)
    assert "(1 ops sit in loops of unknown trip count" in report
