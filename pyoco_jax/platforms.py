"""Keeps an installed libtpu quiet on machines with no accelerator.

With the `tpu` extra installed (for AOT plans of TPU topologies), JAX tries every backend it
finds at start-up, and libtpu, on a machine with no TPU chip, logs an `INVALID_ARGUMENT ...
TPU_WORKER_HOSTNAMES` error although nothing is wrong. Where the machine has neither a TPU
nor a GPU and the user named no platforms, JAX is told to start the CPU alone. AOT plans load
libtpu by themselves (`jax.make_mesh` over a TPU topology), so they are unaffected.
"""

import glob
import importlib.util
import os
import sys

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor.
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA and AMD drivers.


def _has_tpu_chip() -> bool:
    for vendor_file in glob.glob("/sys/bus/pci/devices/*/vendor"):
        with open(vendor_file) as vendor:
            if vendor.read().strip() == _GOOGLE_PCI_VENDOR:
                return True
    return False


def start_cpu_alone_without_accelerators() -> None:
    """Sets JAX's platforms to `cpu` when libtpu is installed but no TPU or GPU is present."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    if _has_tpu_chip() or any(os.path.exists(path) for path in _GPU_DEVICE_FILES):
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # Imported before us: its config has read the environment already.
        sys.modules["jax"].config.update("jax_platforms", "cpu")
