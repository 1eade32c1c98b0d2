"""Converted-weights cache (Orbax), so a large checkpoint is read and re-laid-out only once.

Entries are keyed on the source files' absolute paths, sizes and modification times plus a
converter version, so editing or replacing a weights file invalidates its entry.
"""

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
from absl import logging

# Bump when the converted layout changes, so stale entries are not reused.
CONVERTER_VERSION = 1


def cache_key(files: Sequence[Path], extra: dict) -> str:
    """Hash of (path, size, mtime) of each file and `extra` (e.g. the model's config.json)."""
    parts = []
    for file in files:
        stat = os.stat(file)
        parts.append([str(Path(file).resolve()), stat.st_size, stat.st_mtime_ns])
    payload = json.dumps({"files": parts, "extra": extra, "version": CONVERTER_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = np.asarray(value)
    return flat


def cached(cache_dir: str | os.PathLike | None, key: str, convert: Callable[[], dict[str, np.ndarray]]):
    """`convert()`'s dotted-name -> array dict, read from `cache_dir/key` if there, else made and stored.

    Returns (params, hit). With `cache_dir=None` it just converts.
    """
    if cache_dir is None:
        return convert(), False
    entry = Path(cache_dir).resolve() / key
    checkpointer = ocp.StandardCheckpointer()
    if entry.exists():
        logging.info("converted-weights cache hit: %s", entry)
        return _flatten(checkpointer.restore(entry)), True
    params = convert()
    entry.parent.mkdir(parents=True, exist_ok=True)
    checkpointer.save(entry, _nest(params))
    checkpointer.wait_until_finished()
    logging.info("converted weights cached at %s", entry)
    return params, False
