"""The device mesh, the logical-axis rules, and the shardings of batches and train state.

Mesh axes are named once here; model code only knows logical axis names
(`pyoco_jax.models.axes`), which `config.mesh.rules` maps onto these axes.

A mesh axis has an ICI size (`mesh.<axis>`, devices within a slice or process
granule) and a DCN size (`mesh.dcn_<axis>`, across slices or processes); its
total size is their product. With every DCN size 1 the mesh is a plain device
mesh over all devices.
"""

import contextlib
import math
from collections.abc import Iterator, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.configs import default
from pyoco_jax.errors import ConfigError
from pyoco_jax.models import axes, context_parallel
from pyoco_jax.models.attention_target import kernel_target

MESH_AXES = ("data", "fsdp", "tensor", "sequence")
BATCH_AXES = ("data", "fsdp")
SEQUENCE_AXIS = "sequence"
TENSOR_AXIS = "tensor"
DCN_PREFIX = "dcn_"

Rules = tuple[tuple[str, tuple[str, ...] | None], ...]
"""(logical name, mesh axes or None) pairs; a name may appear several times: candidates in order."""

_logged: set[tuple] = set()


def _log_once(key: tuple, message: str, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        logging.info(message, *args)


def _resolve(sizes: list[int], names: Sequence[str], total: int, unit: str) -> tuple[int, ...]:
    """Replaces the one -1 in `sizes` so their product is `total` (counted in `unit`, e.g. 'devices')."""
    bad = [f"{n}={s}" for n, s in zip(names, sizes, strict=True) if s == 0 or s < -1]
    if bad:
        raise ConfigError(f"mesh axis sizes must be >= 1 (or -1 for one axis): {bad}; change config.mesh.")
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1:
        raise ConfigError(
            f"only one of the mesh axes {list(names)} may be -1, got {[names[i] for i in free]}; set the others."
        )
    fixed = math.prod(s for s in sizes if s != -1)
    if free:
        if total % fixed:
            raise ConfigError(
                f"{total} {unit} cannot be split into mesh axes of fixed size {fixed} "
                f"({dict(zip(names, sizes, strict=True))}); change config.mesh so the fixed axes divide {total}."
            )
        sizes[free[0]] = total // fixed
    if math.prod(sizes) != total:
        raise ConfigError(
            f"config.mesh {dict(zip(names, sizes, strict=True))} needs {math.prod(sizes)} {unit}, "
            f"{total} are available; set one axis to -1 or change the sizes."
        )
    return tuple(sizes)


def _slices_are_granules(devices: Sequence) -> bool:
    return devices[0].platform == "tpu" and getattr(devices[0], "slice_index", None) is not None


def _granule_key(device, by_slice: bool) -> int:
    """Slices on multi-slice TPU, processes elsewhere: the units connected by DCN."""
    return device.slice_index if by_slice else device.process_index


def mesh_shapes(
    mesh_config: ml_collections.ConfigDict, num_devices: int, num_granules: int = 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ICI sizes, DCN sizes) of the mesh axes for `num_devices` in `num_granules` slices/processes.

    With every DCN size 1 the ICI sizes cover all devices; otherwise they cover one granule and
    the DCN sizes multiply to the granule count.
    """
    dcn = [int(mesh_config.get(DCN_PREFIX + name, 1)) for name in MESH_AXES]
    dcn_names = [DCN_PREFIX + name for name in MESH_AXES]
    if dcn == [1] * len(MESH_AXES):
        return _resolve([int(mesh_config[n]) for n in MESH_AXES], MESH_AXES, num_devices, "devices"), tuple(dcn)
    dcn_shape = _resolve(dcn, dcn_names, num_granules, "slices/processes (DCN)")
    if num_devices % num_granules:
        raise ConfigError(f"{num_devices} devices are not spread evenly over {num_granules} slices/processes")
    per_granule = num_devices // num_granules
    ici = _resolve([int(mesh_config[n]) for n in MESH_AXES], MESH_AXES, per_granule, "devices per slice/process")
    return ici, dcn_shape


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with the axes of `config.mesh` (axis types Auto)."""
    devices = list(jax.devices() if devices is None else devices)
    by_slice = _slices_are_granules(devices)
    granules = {_granule_key(d, by_slice) for d in devices}
    ici, dcn = mesh_shapes(mesh_config, len(devices), len(granules))
    try:
        if math.prod(dcn) > 1:
            grid = mesh_utils.create_hybrid_device_mesh(
                ici, dcn, devices, process_is_granule=not by_slice, allow_split_physical_axes=True
            )
        else:
            grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError) as err:
        raise ConfigError(f"cannot lay config.mesh ICI {ici} x DCN {dcn} over {len(devices)} devices: {err}") from err
    return Mesh(grid, MESH_AXES)


def logical_rules(mesh_config: ml_collections.ConfigDict) -> Rules:
    """`config.mesh.rules` checked and normalised to (name, tuple of mesh axes or None) pairs."""
    rules = []
    for index, rule in enumerate(mesh_config.get("rules", ())):
        if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
            raise ConfigError(
                f"config key 'mesh.rules': entry {index} {rule!r} is not a (logical name, mesh axis) pair"
            )
        name, target = rule
        if name not in axes.VOCABULARY:
            raise ConfigError(
                f"config key 'mesh.rules': unknown logical axis {name!r} in {tuple(rule)}; "
                f"logical axes are {axes.VOCABULARY}"
            )
        targets = (target,) if isinstance(target, str) else target
        if targets is not None:
            targets = tuple(targets)
            unknown = [t for t in targets if t not in MESH_AXES]
            if unknown or len(set(targets)) != len(targets):
                raise ConfigError(
                    f"config key 'mesh.rules': rule {tuple(rule)} names mesh axes {list(targets)}; each must be one "
                    f"of {MESH_AXES}, at most once (None replicates)"
                )
        rules.append((name, targets))
    return tuple(rules)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> PartitionSpec:
    """The PartitionSpec of one array whose dims carry logical `names`.

    Dims are assigned largest first (so FSDP takes a parameter's largest dim); each takes the
    first rule for its name whose mesh axes (of size > 1) are free in this array and divide the
    dim. A rule that does not divide is skipped (logged once), falling back to the next rule or
    to replication; a name without rules, or whose rule is None, is replicated.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical axis names {tuple(names)} do not match the shape {tuple(shape)}")
    assigned: list[tuple[str, ...] | None] = [None] * len(shape)
    used: set[str] = set()
    for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
        for name, targets in rules:
            if name != names[dim]:
                continue
            if targets is None:
                break
            live = tuple(a for a in targets if mesh.shape[a] > 1)
            if not live or used & set(live):
                continue
            size = math.prod(mesh.shape[a] for a in live)
            if shape[dim] % size:
                _log_once(
                    (name, shape[dim], live),
                    "sharding: a dim of size %d (%s) is not divisible by mesh axes %s of size %d; trying the next "
                    "rule, else replicating that dim",
                    shape[dim],
                    name,
                    live,
                    size,
                )
                continue
            assigned[dim] = live
            used.update(live)
            break
    return PartitionSpec(*(None if a is None else a[0] if len(a) == 1 else a for a in assigned))


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def partition_specs(tree, mesh: Mesh, rules: Rules):
    """PartitionSpecs for a (possibly abstract) pytree holding nnx Variables.

    Variables with logical names (params, and the optimizer moments and EMA that mirror them)
    follow the rules; every other leaf (step, rng, the optimizer's count) is replicated.
    """

    def spec(x):
        if _is_variable(x):
            names = x.get_metadata().get("out_sharding")
            value = x.get_value()
            if names and len(names) == len(value.shape):
                return x.replace(logical_to_spec(names, value.shape, mesh, rules))
            return x.replace(PartitionSpec())
        return PartitionSpec()

    return jax.tree.map(spec, tree, is_leaf=_is_variable)


def state_shardings(tree, mesh: Mesh, rules: Rules):
    """NamedShardings for every leaf of `tree` (same structure), from `partition_specs`."""
    specs = partition_specs(tree, mesh, rules)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


VIDEO_FIELD = "video"


def video_spec(mesh: Mesh, num_frames: int | None = None) -> PartitionSpec:
    """A video batch (B, F, H, W, C): rows over the data-parallel axes, frames over `sequence` when it is > 1
    and divides `num_frames` (None: assumed to). A DiT's clip whose frames do not divide stays whole over
    `sequence`; the model splits its tokens instead (`model_context`)."""
    sequence = mesh.shape[SEQUENCE_AXIS]
    if sequence > 1 and (num_frames is None or num_frames % sequence == 0):
        return PartitionSpec(BATCH_AXES, SEQUENCE_AXIS)
    return PartitionSpec(BATCH_AXES)


def token_layout(mesh: Mesh, head_axes: Sequence[str]) -> context_parallel.TokenLayout:
    """A transformer's activations on `mesh`: rows over the data-parallel axes, tokens over `sequence`,
    attention heads over `context_parallel_head_axes(head_axes)` (models/context_parallel.py)."""
    return context_parallel.TokenLayout(mesh, BATCH_AXES, SEQUENCE_AXIS, context_parallel_head_axes(head_axes))


def attention_heads_axes(mesh_config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The mesh axes the rules put attention heads on (those of the q/k/v projections' heads)."""
    return next((targets for name, targets in logical_rules(mesh_config) if name == axes.HEADS and targets), ())


def context_parallel_head_axes(head_axes: Sequence[str]) -> tuple[str, ...]:
    """Of the rules' head axes, those context parallelism splits heads over: not rows' or tokens' axes."""
    return tuple(a for a in head_axes if a not in (*BATCH_AXES, SEQUENCE_AXIS))


@contextlib.contextmanager
def model_context(mesh: Mesh | None, mesh_config: ml_collections.ConfigDict | None = None) -> Iterator[None]:
    """Trace a model inside this (inside the jitted function) so it lays its activations out on `mesh`: a DiT
    then keeps its tokens split over `sequence`, and fused attention kernels run per device on q/k/v rows over
    the data-parallel and sequence axes. Both put heads where `mesh_config`'s rules put the projections' heads
    (None: the default config's rules). `mesh` None: a plain, single-device trace."""
    if mesh is None:
        with context_parallel.use_layout(None):
            yield
        return
    heads = attention_heads_axes(mesh_config if mesh_config is not None else default.get_config().mesh)
    target = kernel_target(mesh=mesh, batch_axes=(*BATCH_AXES, SEQUENCE_AXIS), head_axes=heads)
    with context_parallel.use_layout(token_layout(mesh, heads)), target:
        yield


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over the data-parallel axes, for every field: how the loader places batches."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_shardings(mesh: Mesh, example) -> dict:
    """Per-field shardings the train step takes, for batches stacked from `example` (one example, no batch
    axis): rows over the data-parallel axes, and the video's frames over `sequence` (`place_batch` moves
    the loader's batches there; other fields, e.g. a text context, keep whole rows)."""
    return {
        name: NamedSharding(
            mesh, video_spec(mesh, np.shape(value)[0]) if name == VIDEO_FIELD else PartitionSpec(BATCH_AXES)
        )
        for name, value in example.items()
        if np.asarray(value).dtype.kind in "biuf"  # Like the loader: strings (captions, paths) stay on the host.
    }


def place_batch(batch: dict, shardings: dict) -> dict:
    """`batch` laid out as `shardings` (a no-op for fields already there; frames split without communication)."""
    return {name: jax.device_put(x, shardings[name]) if name in shardings else x for name, x in batch.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[name] for name in BATCH_AXES)


def bytes_per_device(tree, shardings) -> int:
    """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) laid out as `shardings`."""
    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        total += math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
    return total
