"""The device mesh and the shardings of batches and train state.

Mesh axes are named once here; model code only knows logical axis names.
"""

import math

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "sequence")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Axis sizes for `num_devices`, resolving the one axis set to -1 to the rest."""
    sizes = [int(mesh_config[name]) for name in MESH_AXES]
    free = [name for name, size in zip(MESH_AXES, sizes, strict=True) if size == -1]
    if len(free) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {free}; set the others (config.mesh.*) explicitly.")
    fixed = math.prod(size for size in sizes if size != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"{num_devices} devices cannot be split into mesh axes of fixed size {fixed}; "
                "change config.mesh so the fixed axes divide the device count."
            )
        sizes[MESH_AXES.index(free[0])] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
            f"{num_devices} are available; set one axis to -1 or change the sizes."
        )
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with the axes of `config.mesh`."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_config, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches are split over the data-parallel axes, everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[name] for name in BATCH_AXES)
