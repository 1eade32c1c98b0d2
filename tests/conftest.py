"""Test-wide setup: 8 fake CPU devices compiled quickly (tests/xla_flags.py), a shared XLA compilation cache,
absl flags parsed for grain.

The cache lives for one pytest session (subprocesses inherit it through the
environment), so identical programs compiled by several tests compile once.
"""

import os
import tempfile

from tests.xla_flags import host_devices_flags

os.environ.setdefault("XLA_FLAGS", host_devices_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="pyoco_jax_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
