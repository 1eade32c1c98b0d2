"""Keeps an installed libtpu quiet on machines with no accelerator.

With the `tpu` extra installed (for AOT plans of TPU topologies), JAX tries every backend it
finds at start-up, and libtpu, on a machine with no TPU chip, logs an `INVALID_ARGUMENT ...
TPU_WORKER_HOSTNAMES` error although nothing is wrong. Where the machine has neither a TPU
nor a GPU and the user named no platforms, JAX is told to start the CPU alone. AOT plans load
libtpu by themselves (`jax.experimental.topologies`), so they are unaffected.
"""

import importlib.util
import os
import pathlib
import sys

# TPU chips on the PCI bus: a TPU VM reached by `gcloud ssh` need not set any TPU variable. The
# device id matters: Google's virtual NIC (gVNIC) on ordinary GCE VMs has the same vendor id.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})  # v3 .. 7x
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA and AMD drivers.


def tpu_chips_present(pci_devices: str = "/sys/bus/pci/devices") -> bool:
    """Whether this host has TPU chips (by PCI vendor and device id), without starting the TPU runtime."""
    root = pathlib.Path(pci_devices)
    if not root.is_dir():
        return False
    for device in root.iterdir():
        try:
            vendor = (device / "vendor").read_text().strip()
            model = (device / "device").read_text().strip()
        except OSError:
            continue
        if vendor == _GOOGLE_PCI_VENDOR and model in _TPU_PCI_DEVICES:
            return True
    return False


def start_cpu_alone_without_accelerators() -> None:
    """Sets JAX's platforms to `cpu` when libtpu is installed but no TPU or GPU is present."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    if tpu_chips_present() or any(os.path.exists(path) for path in _GPU_DEVICE_FILES):
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # Imported before us: its config has read the environment already.
        sys.modules["jax"].config.update("jax_platforms", "cpu")
