"""Per-chip peak numbers of the accelerators we plan for: dense bf16 FLOP/s, HBM bandwidth and capacity, and
the bandwidth between chips (ICI on TPUs, NVLink on GPUs) that collectives use.

Vendor figures, per chip (a TPU v4/v5p chip has two TensorCores; when JAX shows one
device per core the per-device share is the chip's divided by the cores):
    TPU v4   275 TFLOP/s, 32 GiB, 1200 GB/s   cloud.google.com/tpu/docs/v4 (states no per-chip ICI figure)
    TPU v5e  197 TFLOP/s, 16 GiB,  819 GB/s, ICI 400 GB/s    cloud.google.com/tpu/docs/v5e
    TPU v5p  459 TFLOP/s, 95 GiB, 2765 GB/s, ICI 1200 GB/s   cloud.google.com/tpu/docs/v5p
    TPU v6e  918 TFLOP/s, 32 GiB, 1638 GB/s, ICI 800 GB/s    cloud.google.com/tpu/docs/v6e
    H100 SXM 989 TFLOP/s (dense; 1979 with 2:4 sparsity), 80 GB, 3.35 TB/s, NVLink 900 GB/s   NVIDIA H100 datasheet
    H200 SXM 989 TFLOP/s (dense), 141 GB, 4.8 TB/s, NVLink 900 GB/s                           NVIDIA H200 datasheet
The interconnect figures are the vendors' bidirectional totals per chip (all links, both directions); GPUs beyond
one NVLink domain talk over the slower network, which this table does not hold.
Real training reaches a fraction of these peaks; they bound, not predict, a step time.
"""

import dataclasses

import jax

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_bf16_flops: float  # FLOP/s per chip, dense
    hbm_bytes_per_second: float
    hbm_bytes: float
    device_kinds: tuple[str, ...]  # jax `device.device_kind` strings of this chip
    interconnect_bytes_per_second: float | None  # bidirectional ICI/NVLink per chip; None where not published


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 1200e9, 32 * GIB, ("TPU v4",), None),
    "v5e": Chip("TPU v5e", 197e12, 819e9, 16 * GIB, ("TPU v5 lite", "TPU v5e"), 400e9),
    "v5p": Chip("TPU v5p", 459e12, 2765e9, 95 * GIB, ("TPU v5", "TPU v5p"), 1200e9),
    "v6e": Chip("TPU v6e", 918e12, 1638e9, 32 * GIB, ("TPU v6 lite", "TPU v6e"), 800e9),
    "h100": Chip("NVIDIA H100 SXM", 989e12, 3.35e12, 80e9, ("NVIDIA H100 80GB HBM3", "NVIDIA H100"), 900e9),
    "h200": Chip("NVIDIA H200 SXM", 989e12, 4.8e12, 141e9, ("NVIDIA H200",), 900e9),
}


def chip_for_device_kind(device_kind: str) -> Chip | None:
    """The table entry for a jax device kind (exact match first, then prefix), or None (e.g. CPU)."""
    for chip in CHIPS.values():
        if device_kind in chip.device_kinds:
            return chip
    for chip in CHIPS.values():
        if any(device_kind.startswith(kind) for kind in chip.device_kinds if kind.startswith("NVIDIA")):
            return chip
    return None


def local_peak_flops() -> float | None:
    """Dense bf16 FLOP/s of one of this process's devices (one JAX device per chip), None where unknown (CPU)."""
    chip = chip_for_device_kind(jax.local_devices()[0].device_kind)
    return None if chip is None else chip.peak_bf16_flops
