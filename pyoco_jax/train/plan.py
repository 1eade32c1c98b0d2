"""AOT plans: the real training step compiled for a topology we do not have, and what it would cost.

`pyoco-train --config X --plan TOPOLOGY` builds the same jitted step as training
(shardings from `config.mesh.rules` on a mesh over the target's devices), compiles
it without running it, and reports per-device memory, FLOPs, a roofline step time, the
MFU that step time implies, and whether it fits in HBM. Topologies:
    cpu:N                  N host devices (pyoco-train sets XLA_FLAGS so they exist)
    v4|v5e|v5p|v6e:AxB[xC] a TPU slice, e.g. v5p:2x2x1, v5p:4x4x4, v5e:4x4, v6e:4x4;
                           compiled by libtpu on this machine (`pip install -e ".[tpu]"`)
    ...,slices=S           S such slices joined over DCN (set config.mesh.dcn_* to use them)

FLOPs: XLA's cost analysis counts the body of a loop once, so for a model whose layers run under
`jax.lax.scan` (the DiT's `scan_layers`) it misses all layers but one. The plan also counts the matmuls
of the traced step itself (train/flops.py: scan bodies times their length, recomputation included; per
device as if the work split evenly), and the roofline takes the larger count; the same step traced without
remat gives the model FLOPs that MFU divides by. A step that cannot fit raises `PlanDoesNotFit` with the
compiler's figure. With data.buckets every bucket shape compiles its own step; the plan is the largest's (most
pixels or latents x frames), the one that needs the most memory and time, and its report says so.

Attention picks its kernels while the step is traced, for the target's platform (a TPU topology: splash where
it pays, models/attention_choice.py) and on its mesh; the report ends with each kernel's count and reason.

Collectives (train/collectives.py: read from the compiled HLO, loops counted by their trip counts) are reported
apart, with a ring-model time at the chip's interconnect bandwidth, and give a second step-time bound: the
roofline assumes they hide behind compute (best case), "no overlap" adds their time to it (worst case).
"""

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from pyoco_jax import parallel
from pyoco_jax.data.buckets import Bucket, parse_buckets
from pyoco_jax.data.loader import make_source
from pyoco_jax.errors import UserError
from pyoco_jax.models.attention import record_kernel_choices
from pyoco_jax.train.build import build_run, sharded_step
from pyoco_jax.train.collectives import CollectiveSummary, hlo_collectives
from pyoco_jax.train.flops import matmul_flops, step_model_flops
from pyoco_jax.train.hardware import CHIPS, Chip, chip_for_device_kind

TOPOLOGY_FORMS = "cpu:N, or v4|v5e|v5p|v6e:AxB[xC] (e.g. v5p:2x2x1, v5e:4x4), optionally followed by ,slices=S"
_TPU_PATTERN = re.compile(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})(?:,slices=(\d+))?")
_CPU_PATTERN = re.compile(r"cpu:(\d+)")
TEXT_TOKENS = 77  # CLIP's context length: the text embeddings a text-conditioned clip carries.
_ACCELERATOR_TYPES = {"v4": "v4-8", "v5e": "v5litepod-4", "v5p": "v5p-8", "v6e": "v6e-4"}


class TopologyError(UserError):
    """A --plan topology that cannot be parsed or built here; the message says what to change."""


class PlanDoesNotFit(UserError):
    """The compiler could not fit the step in the target's device memory (its message has the bytes it needed)."""


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    devices: list
    chip: Chip | None
    devices_per_chip: int


def cpu_device_count(topology: str) -> int | None:
    """N for 'cpu:N' (so a CLI can create N host devices before JAX starts), else None."""
    match = _CPU_PATTERN.fullmatch(topology.strip())
    return int(match.group(1)) if match else None


def _tpu_devices(generation: str, dims: tuple[int, ...], slices: int) -> list:
    if importlib.util.find_spec("libtpu") is None:
        raise TopologyError(
            f"planning for TPU {generation} needs libtpu to compile: pip install -e '.[tpu]' (or 'jax[tpu]')"
        )
    from jax.experimental import topologies

    host_bounds = (min(2, dims[0]), min(2, dims[1]), 1)
    name = f"{generation}:{'x'.join(map(str, dims))}"
    try:
        with _quiet_libtpu_start(generation):
            description = topologies.get_topology_desc(
                platform="tpu",
                topology_name=name,
                chip_config_name="default",
                chips_per_host_bounds=host_bounds,
                num_slices=slices,
            )
    except Exception as err:  # libtpu reports bad shapes with assorted exception types
        raise TopologyError(f"libtpu cannot build the topology {name} x {slices} slice(s): {err}") from err
    return list(description.devices)


@contextlib.contextmanager
def _quiet_libtpu_start(generation: str) -> Iterator[None]:
    """libtpu reads these when it starts; on a machine without TPUs they only silence its warnings. A plan
    opens no TPU device, so it need not take libtpu's one-process lock (plans can run side by side). They are
    unset again after: a TPU worker variable left behind would make this process's children (e.g. a later
    pyoco-train) take the machine for a Cloud TPU host."""
    quieting = {
        "TPU_WORKER_HOSTNAMES": "localhost",
        "TPU_ACCELERATOR_TYPE": _ACCELERATOR_TYPES[generation],
        "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    }
    added = [name for name in quieting if name not in os.environ]
    os.environ.update({name: quieting[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def target(topology: str) -> Target:
    """The devices (real host devices for cpu:N, abstract TPU devices otherwise) and chip of `topology`."""
    text = topology.strip()
    count = cpu_device_count(text)
    if count is not None:
        devices = jax.devices("cpu")
        if count < 1 or len(devices) < count:
            raise TopologyError(
                f"--plan {text} needs {count} host devices, this process has {len(devices)}; run it through "
                f"pyoco-train (which sets XLA_FLAGS=--xla_force_host_platform_device_count={count} before JAX starts)"
            )
        return Target(text, devices[:count], None, 1)
    match = _TPU_PATTERN.fullmatch(text)
    if not match:
        raise TopologyError(f"unknown topology {topology!r}; expected {TOPOLOGY_FORMS}")
    generation, dims_text, slices = match.group(1), match.group(2), int(match.group(3) or 1)
    dims = tuple(int(d) for d in dims_text.split("x"))
    if min(dims) < 1 or slices < 1:
        raise TopologyError(f"topology {topology!r} has an empty dimension; every size must be >= 1")
    devices = _tpu_devices(generation, dims, slices)
    chips = math.prod(dims) * slices
    chip = chip_for_device_kind(devices[0].device_kind) or CHIPS[generation]
    return Target(text, devices, chip, max(len(devices) // chips, 1))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-device figures of one compiled training step."""

    topology: str
    num_devices: int
    mesh: dict[str, int]
    state_bytes: dict[str, int]  # params, frozen, opt_state, ema (from the abstract state and its shardings)
    batch_bytes: int
    argument_bytes: int  # compiled memory analysis from here on
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    flops: float  # per device, from the compiled cost analysis (recomputation included; a loop body once)
    bytes_accessed: float  # per device, compiled cost analysis (a loop body once)
    program_flops: float  # per device: matmuls of the traced step / devices, loops and recomputation included
    kernel_flops: float  # per device: the part of program_flops inside fused kernels (custom calls to XLA)
    model_flops: float  # per device: the same step traced without remat (what MFU counts)
    compile_seconds: float
    frames_per_step: int
    chip: Chip | None
    devices_per_chip: int
    attention_kernels: tuple[tuple[str, str, int], ...] = ()  # (kernel, why, attention calls traced)
    collectives: CollectiveSummary | None = None  # from the compiled HLO

    @property
    def total_bytes(self) -> int:
        """Peak estimate: inputs + outputs not aliased to donated inputs + temporaries (activations) + code."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    @property
    def hbm_bytes(self) -> float | None:
        return None if self.chip is None else self.chip.hbm_bytes / self.devices_per_chip

    @property
    def loop_factor(self) -> float:
        """How many times the traced matmul count exceeds the compiled one (>= 1): the trip count that the
        cost analysis left out, when the work runs in a loop (a scan over layers); 1 for unrolled programs.
        Both sides leave out the fused kernels' matmuls, which the cost analysis cannot see."""
        outside_kernels = self.program_flops - self.kernel_flops
        return max(1.0, outside_kernels / self.flops) if self.flops > 0 else 1.0

    @property
    def step_flops(self) -> float:
        """FLOPs per device the roofline charges: the larger of the compiled and the traced counts."""
        return max(self.flops, self.program_flops)

    @property
    def roofline(self) -> tuple[float, float, float] | None:
        """(compute seconds, memory seconds, step seconds = the larger) from the per-device peaks.

        Memory traffic is the compiled bytes scaled by `loop_factor` (a loop's body holds nearly all of it;
        the few bytes outside, e.g. the optimizer update, are overcounted by that factor)."""
        if self.chip is None:
            return None
        compute = self.step_flops / (self.chip.peak_bf16_flops / self.devices_per_chip)
        memory = self.bytes_accessed * self.loop_factor / (self.chip.hbm_bytes_per_second / self.devices_per_chip)
        return compute, memory, max(compute, memory)

    @property
    def mfu(self) -> float | None:
        """Model FLOPs per device over what the chip could do in the roofline step time: an upper bound."""
        roofline = self.roofline
        if roofline is None:
            return None
        return self.model_flops / (self.chip.peak_bf16_flops / self.devices_per_chip) / roofline[2]

    @property
    def interconnect_bandwidth(self) -> float | None:
        """Bytes/s of ICI (NVLink) per device, None where the chip has no published figure."""
        if self.chip is None or self.chip.interconnect_bytes_per_second is None:
            return None
        return self.chip.interconnect_bytes_per_second / self.devices_per_chip

    @property
    def collective_seconds(self) -> float | None:
        """Ring-model seconds per step of all collectives, one after another (train/collectives.py)."""
        if self.collectives is None or self.interconnect_bandwidth is None:
            return None
        return self.collectives.seconds(self.interconnect_bandwidth)

    @property
    def step_without_overlap(self) -> float | None:
        """The worst-case bound: the roofline step plus the collectives' time, none hidden behind compute."""
        roofline, collective = self.roofline, self.collective_seconds
        return None if roofline is None or collective is None else roofline[2] + collective

    @property
    def mfu_without_overlap(self) -> float | None:
        """`mfu` at the no-overlap step time."""
        step = self.step_without_overlap
        return None if step is None else self.mfu * self.roofline[2] / step


def compile_step(traced, topology: str):
    """`traced` (a jitted step's trace) compiled; a step too big for the device memory is a `PlanDoesNotFit`."""
    try:
        return traced.lower().compile()
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err) or "HBM" not in str(err):
            raise  # Not the step's size (e.g. a kernel's scratch memory): a bug to see whole.
        reason = str(err).strip().splitlines()[0].rstrip(".")
        raise PlanDoesNotFit(
            f"the step does not fit on {topology}: {reason}. Lower the per-device batch (data.global_batch_size "
            "over mesh.data x mesh.fsdp), set model.remat=full, split attention heads over mesh.tensor, or use "
            "an attention kernel that does not hold the attention matrix"
        ) from err


def planned_bucket(config: ml_collections.ConfigDict) -> Bucket | None:
    """The largest of data.buckets (most height x width x frames; the first of equals), or None without buckets."""
    buckets = parse_buckets(config.data.buckets)
    return max(buckets, key=lambda b: b.height * b.width * b.frames) if buckets else None


def plan_example(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """One example with the fields, shapes and dtypes the data pipeline yields; a plan reads no data.

    Synthetic clips are rendered; real sources are described from the config: uint8 pixels or float32
    latents (at the largest bucket's shape with data.buckets), and for text-conditioned models a context of
    CLIP's 77 token embeddings.
    """
    d = config.data
    if d.source == "synthetic":
        return make_source(d, seed=config.seed)[0]
    video_dtype = np.float32 if d.source == "latents" else np.uint8
    shape = planned_bucket(config) or Bucket(d.resolution, d.resolution, d.num_frames)
    example = {
        "video": np.zeros((shape.frames, shape.height, shape.width, d.channels), video_dtype),
        "label": np.zeros((), np.int32),
        "fps": np.zeros((), np.float32),
    }
    if config.model.cross_attention_dim:
        example["context"] = np.zeros((TEXT_TOKENS, config.model.cross_attention_dim), np.float32)
    return example


def make_plan(config: ml_collections.ConfigDict, topology: str) -> Plan:
    """Compiles the training step of `config` for `topology` (never runs it) and measures it."""
    chosen = target(topology)
    mesh = parallel.make_mesh(config.mesh, chosen.devices)
    parts = build_run(config)
    example = plan_example(config)
    # Text runs drop captions to the empty prompt inside the step; its embedding has the context's shape.
    step = sharded_step(parts, config, mesh, example, null_context=example.get("context"))
    state, batch = step.abstract_inputs(parts.abstract_state, example, config.data.global_batch_size)
    # Attention picks its kernels for the mesh's platform (TPU: splash) while the step is traced.
    with record_kernel_choices() as kernels:
        traced = step.fn.trace(state, batch)
    start = time.perf_counter()
    compiled = compile_step(traced, chosen.name)
    compile_seconds = time.perf_counter() - start
    devices = len(chosen.devices)
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    program_flops = matmul_flops(traced.jaxpr)
    shardings = step.state_sharding
    state_bytes = {
        name: parallel.bytes_per_device(getattr(parts.abstract_state, name), getattr(shardings, name))
        for name in ("params", "frozen", "opt_state", "ema")
    }
    return Plan(
        topology=chosen.name,
        num_devices=devices,
        mesh=dict(mesh.shape),
        state_bytes=state_bytes,
        batch_bytes=parallel.bytes_per_device(batch, jax.tree.map(lambda x: x.sharding, batch)),
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        program_flops=program_flops / devices,
        kernel_flops=(program_flops - matmul_flops(traced.jaxpr, kernels=False)) / devices,
        model_flops=step_model_flops(config, mesh, example) / devices,
        compile_seconds=compile_seconds,
        frames_per_step=config.data.global_batch_size * example["video"].shape[0],
        chip=chosen.chip,
        devices_per_chip=chosen.devices_per_chip,
        attention_kernels=tuple((c.kernel, c.reason, n) for c, n in sorted(kernels.items(), key=lambda x: -x[1])),
        collectives=hlo_collectives(compiled.as_text()),
    )


def _size(num_bytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:10.2f} {unit}"
    return f"{num_bytes:10.0f} B  "


def _architecture(model: ml_collections.ConfigDict) -> str:
    """The model's size in a few words, for the plan's first lines."""
    if model.backbone == "dit":
        dit = model.dit
        width = dit.num_attention_heads * dit.attention_head_dim
        return f"DiT {dit.num_layers} blocks of width {width}, patch {tuple(dit.patch_size)}"
    return f"U-Net channels {tuple(model.block_out_channels)}"


def _collective_lines(plan: Plan) -> list[str]:
    """Bytes and ring-model seconds per step of each kind of collective (train/collectives.py)."""
    if not plan.collectives:
        return []
    bandwidth = plan.interconnect_bandwidth
    timing = "no time: no interconnect bandwidth known for these devices"
    if bandwidth is not None:
        timing = f"ring-model time at {bandwidth / 1e9:.0f} GB/s per device"
    lines = [f"Collectives per device per step (compiled HLO; {timing}):"]
    summary = plan.collectives
    seconds = summary.seconds_by_kind(bandwidth) if bandwidth else {}
    for kind, total in summary.bytes_by_kind().items():
        runs = sum(op.count for op in summary.ops if op.kind == kind)
        cost = f"{seconds[kind] * 1e3:9.3f} ms" if kind in seconds else "        n/a"
        lines.append(f"  {kind:18s} x {runs:<5d} {_size(total)}  {cost}")
    if not summary.ops:
        lines.append("  none")
    if summary.per_iteration_ops:
        lines.append(
            f"  ({summary.per_iteration_ops} ops sit in loops of unknown trip count: counted once, per loop "
            "iteration, so these totals are floors)"
        )
    return lines


def format_plan(plan: Plan, config: ml_collections.ConfigDict) -> str:
    """A human-readable report (one figure per line)."""
    m, bucket = config.model, planned_bucket(config)
    clip = f"{config.data.num_frames} frames x {config.data.resolution}^2"
    if bucket is not None:
        clip = f"{bucket.frames} frames x {bucket.height}x{bucket.width} (the largest of data.buckets)"
    lines = [
        f"Plan for {plan.topology}: {plan.num_devices} devices, mesh {plan.mesh}",
        f"  model: {_architecture(m)}, dtype {m.dtype}, params {m.param_dtype}, "
        f"remat {m.remat}; batch {config.data.global_batch_size} x {clip}",
        "Memory per device:",
        f"  params            {_size(plan.state_bytes['params'])}",
        f"  frozen params     {_size(plan.state_bytes['frozen'])}",
        f"  optimizer state   {_size(plan.state_bytes['opt_state'])}",
        f"  EMA               {_size(plan.state_bytes['ema'])}",
        f"  batch             {_size(plan.batch_bytes)}",
        f"  arguments         {_size(plan.argument_bytes)}   (compiled: state + batch)",
        f"  outputs           {_size(plan.output_bytes)}   ({_size(plan.alias_bytes).strip()} aliased to donated "
        "inputs)",
        f"  activations/temp  {_size(plan.temp_bytes)}",
        f"  generated code    {_size(plan.code_bytes)}",
        f"  total             {_size(plan.total_bytes)}",
    ]
    if plan.hbm_bytes is None:
        lines.append("  fits: n/a (no HBM capacity for host devices)")
    else:
        verdict = "yes" if plan.total_bytes <= plan.hbm_bytes else "NO"
        lines.append(
            f"  fits in HBM: {verdict} ({plan.total_bytes / plan.hbm_bytes:.1%} of {plan.hbm_bytes / 2**30:.1f} GiB "
            f"per device, {plan.chip.name})"
        )
    lines += [
        "Compute per step (per device):",
        f"  FLOPs             {plan.flops:.4g}  (compiled cost analysis, which counts a loop body once)",
        f"  program FLOPs     {plan.program_flops:.4g}  (matmuls of the traced step over {plan.num_devices} devices, "
        f"loops and recomputation included; all devices: {plan.program_flops * plan.num_devices:.4g})",
        f"  model FLOPs       {plan.model_flops:.4g}  (the same without remat: what MFU counts)",
        f"  in fused kernels  {plan.kernel_flops:.4g}  (of the program FLOPs; the compiled cost analysis does not "
        "see them)",
        f"  bytes accessed    {plan.bytes_accessed:.4g}  (compiled; x{plan.loop_factor:.1f} for the loops in the "
        "roofline; kernels' operands and results once, their re-reads of blocks not counted)",
        f"  compiled in       {plan.compile_seconds:.0f} s",
    ]
    roofline = plan.roofline
    if roofline is None:
        lines.append("  step time / MFU: n/a (no peak FLOP/s or bandwidth for host devices)")
    else:
        compute, memory, step = roofline
        bound = "compute" if compute >= memory else "HBM bandwidth"
        lines += [
            f"  step time (roofline) {step * 1e3:.3f} ms, {bound}-bound (compute {compute * 1e3:.3f} ms, "
            f"memory {memory * 1e3:.3f} ms; collectives hidden behind them: the best case)",
            f"  frames/s (roofline) {plan.frames_per_step / step:.4g}",
            f"  implied MFU {plan.mfu:.1%} (roofline: model FLOPs / peak / roofline step: an upper bound, real steps "
            "are slower than the roofline)",
        ]
        if plan.step_without_overlap is not None:
            no_overlap = plan.step_without_overlap
            lines += [
                f"  step time (compute/HBM + collectives, no overlap) {no_overlap * 1e3:.3f} ms (roofline "
                f"{step * 1e3:.3f} ms + collectives {plan.collective_seconds * 1e3:.3f} ms: the worst case)",
                f"  frames/s (no overlap) {plan.frames_per_step / no_overlap:.4g}",
                f"  implied MFU {plan.mfu_without_overlap:.1%} (no overlap: model FLOPs / peak / that step)",
            ]
    lines += _collective_lines(plan)
    lines.append("Attention kernels (calls as traced; a scanned layer's body counts once):")
    lines += [f"  {kernel:6s} x {count:<4d} {reason}" for kernel, reason, count in plan.attention_kernels]
    return "\n".join(lines)
