"""The collectives of a compiled step, read from its optimized HLO, and what they cost on the interconnect.

The roofline (train/plan.py) bounds a step by its FLOPs and HBM traffic; a sharded step also moves data between
chips, and the compiler's cost analysis does not say how much. `hlo_collectives(compiled.as_text())` lists every
all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute with its bytes per device and the size of
its replica groups. An async pair (`all-gather-start` / `all-gather-done`) counts once, at the `-done`, whose
result is the data the pair delivers; an op wrapped in `async-start` is found in the computation it calls.

Loops: a collective inside a while loop (a `jax.lax.scan` over layers) runs once per iteration. XLA:CPU writes the
trip count it proved into the loop's backend_config (`"known_trip_count":{"n":"5"}`); XLA:TPU does not, and
there the count is read from the loop's condition `counter < N` (a scan's counter runs from 0 in steps of 1).
The op is counted that many times (nested loops multiply). A loop with neither is counted once, "per loop
iteration": its ops are marked `per_iteration` and the totals are floors.

Bytes: each op's full buffer per device: the gathered result of an all-gather, the operand (result x group size)
of a reduce-scatter, the buffer of an all-reduce, all-to-all or collective-permute. XLA:TPU writes a
reduce-scatter as a fusion whose computation, named all-reduce-scatter*, holds an all-reduce of the operand and
keeps a slice; that all-reduce is counted as the reduce-scatter it is. XLA:CPU all-reduces the whole buffer and
slices it in separate ops, so a CPU plan shows an all-reduce there.

Time model (ring algorithms over a group of n devices, bandwidth B per device, latency ignored):
    all-gather, reduce-scatter   (n - 1) / n x bytes / B
    all-reduce                   2 (n - 1) / n x bytes / B   (a reduce-scatter then an all-gather)
    all-to-all                   (n - 1) / n x bytes / B
    collective-permute           bytes / B                   (each device sends its buffer once)
B is the chip's bidirectional ICI bandwidth (train/hardware.py) shared by the devices on a chip: the best case,
a ring that uses every link of the chip in both directions. Real collectives over one axis of a torus use fewer
links, so these times are a lower bound for each op, and summing them assumes the ops do not overlap each other.
"""

import dataclasses
import re

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

# Bytes per element of HLO's primitive types (sub-byte types packed).
_DTYPE_BYTES = {
    "pred": 1, "s2": 0.25, "u2": 0.25, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
    "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b([a-z]+[0-9a-z]*)\[([^\]]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_CALLS = re.compile(r"\b(body|condition|calls|to_apply|branch_computations|true_computation|false_computation)="
                    r"(\{[^}]*\}|%?[\w.\-]+)")  # fmt: skip
_TRIP_COUNT = re.compile(r'known_trip_count\\?"\s*:\s*\{\s*\\?"n\\?"\s*:\s*\\?"(\d+)')
_EXPLICIT_GROUPS = re.compile(r"replica_groups=\{((?:\{[\d,\s]*\},?\s*)*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")
_REDUCE_SCATTER_FUSION = "all-reduce-scatter"  # TPU's name for the computation of a fused reduce-scatter
_PAIRS = re.compile(r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective op of the program: `count` = how many times a step runs it (loop trip counts included)."""

    kind: str
    bytes: float  # the op's full buffer per device (module docstring)
    group_size: int
    count: int
    per_iteration: bool = False  # inside a loop whose trip count is unknown: `count` is a floor

    def seconds(self, bandwidth: float) -> float:
        """Ring-model time of all `count` runs at `bandwidth` bytes/s per device (module docstring)."""
        n = self.group_size
        if n <= 1:
            return 0.0
        share = {"all-reduce": 2 * (n - 1) / n, "collective-permute": 1.0}.get(self.kind, (n - 1) / n)
        return self.count * share * self.bytes / bandwidth


@dataclasses.dataclass(frozen=True)
class CollectiveSummary:
    """Every collective of one compiled program."""

    ops: tuple[Collective, ...]

    @property
    def per_iteration_ops(self) -> int:
        """How many ops sit in loops of unknown trip count, counted once per step (so the totals are floors)."""
        return sum(op.per_iteration for op in self.ops)

    def bytes_by_kind(self) -> dict[str, float]:
        """Bytes per device per step of each kind present, in KINDS order."""
        totals = {kind: sum(op.count * op.bytes for op in self.ops if op.kind == kind) for kind in KINDS}
        return {kind: total for kind, total in totals.items() if any(op.kind == kind for op in self.ops)}

    def seconds_by_kind(self, bandwidth: float) -> dict[str, float]:
        """Estimated seconds per step of each kind present (ring model, no overlap between ops)."""
        return {kind: sum(op.seconds(bandwidth) for op in self.ops if op.kind == kind) for kind in self.bytes_by_kind()}

    def seconds(self, bandwidth: float) -> float:
        return sum(op.seconds(bandwidth) for op in self.ops)


def array_bytes(shape_text: str) -> float:
    """Bytes of every array in an HLO shape (a tuple's elements summed), e.g. 'f32[8,64]{1,0}' -> 2048."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape_text):
        if dtype not in _DTYPE_BYTES:
            continue  # Not a type: e.g. the mesh[...] of a replica group.
        elements = 1
        for dim in filter(None, dims.replace("<=", "").split(",")):
            elements *= int(dim)
        total += elements * _DTYPE_BYTES[dtype]
    return total


def _group_size(attributes: str, all_devices: int) -> int:
    """Devices per replica group, from any of HLO's three spellings; no groups means every device."""
    if match := _MESH_GROUPS.search(attributes):
        sizes = dict(re.findall(r"'?([\w.\-]+)'?\s*=\s*(\d+)", match.group(1)))
        size = 1
        for axis in re.findall(r"'?([\w.\-]+)'?", match.group(2)):
            size *= int(sizes[axis])
        return size
    if match := _IOTA_GROUPS.search(attributes):
        return int(match.group(2))
    if match := _EXPLICIT_GROUPS.search(attributes):
        first = re.search(r"\{([\d,\s]*)\}", match.group(1))
        if first and first.group(1).strip():
            return len(first.group(1).split(","))
    if match := _PAIRS.search(attributes):
        return len(set(re.findall(r"\d+", match.group(1))))
    return all_devices


def _all_devices(hlo_text: str) -> int:
    """Devices of the module (partitions x replicas): the group of a collective that names none."""
    header = hlo_text.split("\n", 1)[0]
    partitions = re.search(r"num_partitions=(\d+)", header)
    replicas = re.search(r"replica_count=(\d+)", header)
    return int(partitions.group(1) if partitions else 1) * int(replicas.group(1) if replicas else 1)


def hlo_collectives(hlo_text: str) -> CollectiveSummary:
    """The collectives of an optimized HLO module (`compiled.as_text()`), each counted as often as a step runs it."""
    all_devices = _all_devices(hlo_text)
    bodies, entry = _computations(hlo_text)
    runs, uncounted = _runs_per_step(bodies, entry)
    ops = []
    for computation, instructions in bodies.items():
        if not runs[computation]:
            continue
        starts = {name: rest for name, _, opcode, rest in instructions if opcode.endswith("-start")}
        for _, shape, opcode, rest in instructions:
            kind = opcode.removesuffix("-done")
            if kind not in KINDS or opcode.endswith("-start"):
                continue
            attributes = rest
            if opcode.endswith("-done"):  # Groups are on the -start op this one waits for.
                attributes = starts.get(rest.split(")", 1)[0].strip().lstrip("%"), rest)
            group = _group_size(attributes, all_devices)
            size = array_bytes(shape) * (group if kind == "reduce-scatter" else 1)
            if kind == "all-reduce" and computation.startswith(_REDUCE_SCATTER_FUSION):
                kind = "reduce-scatter"  # TPU: an all-reduce whose caller keeps one shard; the same bytes.
            ops.append(Collective(kind, size, group, runs[computation], computation in uncounted))
    return CollectiveSummary(tuple(ops))


Instruction = tuple[str, str, str, str]  # name, result shape, opcode, the rest of the line (operands, attributes)


def _computations(hlo_text: str) -> tuple[dict[str, list[Instruction]], str]:
    """Each computation's instructions in the order printed (callees before callers), and the ENTRY's name."""
    bodies: dict[str, list[Instruction]] = {}
    entry = current = None
    for line in hlo_text.splitlines():
        if line and not line[0].isspace():
            if match := _COMPUTATION.match(line):
                current = match.group(1)
                bodies[current] = []
                entry = current if line.startswith("ENTRY") else entry
            elif line.rstrip() == "}":
                current = None
            # Else an attribute continued from the line before (a Pallas kernel's metadata spans lines).
            continue
        if current is not None and (instruction := _INSTRUCTION.match(line)):
            bodies[current].append(instruction.groups())
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text: pass compiled.as_text() of a compiled program")
    return bodies, entry


def _runs_per_step(bodies: dict[str, list[Instruction]], entry: str) -> tuple[dict[str, int], set[str]]:
    """How often each computation runs per step, and those inside a loop whose trip count is unknown.

    A callee is printed before its callers, so walking the computations backwards from ENTRY reaches every
    caller before its callees."""
    runs = dict.fromkeys(bodies, 0)
    runs[entry] = 1
    uncounted: set[str] = set()
    for computation in reversed(bodies):
        for _, _, opcode, rest in bodies[computation]:
            trip = _trip_count(rest, bodies) if opcode == "while" else 1
            for role, callees in _CALLS.findall(rest):
                looped = role in ("body", "condition")
                for callee in re.findall(r"[\w.\-]+", callees):
                    if callee not in runs:
                        continue
                    runs[callee] += runs[computation] * ((trip or 1) if looped else 1)
                    if computation in uncounted or (looped and trip is None):
                        uncounted.add(callee)
    return runs, uncounted


def _trip_count(while_rest: str, bodies: dict[str, list[Instruction]]) -> int | None:
    """A while loop's trip count: as XLA states it, else read from a scan's condition `counter < N`, else None.

    The second form (TPU's compiler states no trip count) assumes the counter runs from 0 in steps of 1, as
    `jax.lax.scan`'s and `fori_loop`'s from 0 do."""
    if match := _TRIP_COUNT.search(while_rest):
        return int(match.group(1))
    condition = re.search(r"\bcondition=%?([\w.\-]+)", while_rest)
    instructions = bodies.get(condition.group(1), []) if condition else []
    constants = {
        name: int(value.group(1))
        for name, shape, opcode, rest in instructions
        if opcode == "constant" and re.match(r"[su](32|64)\[\]", shape) and (value := re.match(r"(\d+)\)", rest))
    }
    compares = [rest for _, _, opcode, rest in instructions if opcode == "compare"]
    if len(compares) != 1 or "direction=LT" not in compares[0]:
        return None
    operands = [name.strip().lstrip("%") for name in compares[0].split(")", 1)[0].split(",")]
    bounds = [constants[name] for name in operands[1:] if name in constants]
    return bounds[0] if len(bounds) == 1 else None
