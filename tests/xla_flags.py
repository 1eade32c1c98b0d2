"""The XLA flags of every test process, in-process and child alike (no imports: conftest reads this first).

LLVM unoptimised: the same arithmetic (no fast-math either way) for a third less compile time (the noise-prior
study's training step: 25.6 s -> 16.5 s) at 1.8x the run time; the suite mostly compiles tiny programs and runs
them a few times. One setting for all processes, so results compared across processes come from the same code.
"""

QUICK_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def host_devices_flags(count: int) -> str:
    """XLA_FLAGS for `count` fake CPU devices, compiled like every other test process."""
    return f"--xla_force_host_platform_device_count={count} {QUICK_COMPILE_FLAG}"
