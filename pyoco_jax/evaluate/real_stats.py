"""A file cache for the real data's FVD statistics: they cost thousands of I3D passes and never change.

The file name holds everything the statistics depend on (dataset, split, protocol, the seed that picks
the clips), so a changed choice finds no file instead of a stale one. Writes are atomic (a temporary
file in the same directory, then os.replace), so an interrupted run never leaves a half-written cache.
"""

import os
import re
from collections.abc import Callable
from pathlib import Path

from pyoco_jax.evaluate.frechet import FeatureStats
from pyoco_jax.evaluate.fvd_protocol import get_protocol
from pyoco_jax.paths import write_atomically

_NAME_PART = re.compile(r"[A-Za-z0-9._\-]+")


def stats_path(directory: str | os.PathLike, dataset: str, split: str, protocol: str, seed: int) -> Path:
    """`<directory>/fvd_stats/<dataset>_<split>_<protocol>_seed<seed>.npz`, for a known protocol name."""
    get_protocol(protocol)
    for label, part in (("dataset", dataset), ("split", split)):
        if not _NAME_PART.fullmatch(part):
            raise ValueError(
                f"{label} {part!r} must be letters, digits, '.', '_' or '-' (it becomes part of a file name)"
            )
    return Path(directory) / "fvd_stats" / f"{dataset}_{split}_{protocol}_seed{int(seed)}.npz"


def cached_stats(path: str | os.PathLike, compute: Callable[[], FeatureStats]) -> FeatureStats:
    """Reads `path` if it exists; otherwise runs `compute` once and writes its result there atomically."""
    path = Path(path)
    if path.exists():
        return FeatureStats.load(path)
    stats = compute()
    write_atomically(path, stats.save)
    return stats
