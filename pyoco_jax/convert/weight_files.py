"""Checkpoint weight files on disk -> numpy tensors: safetensors reading and single-file/sharded discovery.

No torch: safetensors are decoded here (bfloat16 via ml_dtypes). Shared by every converter and the exporter.
"""

import json
from collections.abc import Iterable
from pathlib import Path

import ml_dtypes
import numpy as np
import safetensors

from pyoco_jax.convert.merge import ConversionError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
}


def read_safetensors(file: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays."""
    try:
        entries = safetensors.deserialize(file.read_bytes())
    except Exception as err:  # A corrupt or truncated file: say which.
        raise ConversionError(f"cannot read safetensors file {file}: {err}") from err
    unsupported = sorted({info["dtype"] for _, info in entries} - _DTYPES.keys())
    if unsupported:
        raise ConversionError(f"unsupported safetensors dtype {', '.join(unsupported)} in {file}")
    return {
        name: np.frombuffer(info["data"], dtype=np.dtype(_DTYPES[info["dtype"]])).reshape(info["shape"])
        for name, info in entries
    }


def _index(folder: Path, weights_name: str) -> Path:
    return folder / f"{weights_name}.index.json"


def has_weight_files(folder: Path, weights_name: str) -> bool:
    """Whether `folder` holds `weights_name` or its sharded index (else a caller may try pickle weights)."""
    return (folder / weights_name).exists() or _index(folder, weights_name).exists()


def weight_files(folder: Path, weights_name: str) -> list[Path]:
    """`weights_name` in `folder`, or the shards its `.index.json` lists; ConversionError naming what is there."""
    if (folder / weights_name).exists():
        return [folder / weights_name]
    if _index(folder, weights_name).exists():
        index = json.loads(_index(folder, weights_name).read_text())
        return sorted({folder / shard for shard in index["weight_map"].values()})
    present = sorted(p.name for p in folder.iterdir())
    hint = (
        " Pickle-based .bin weights are refused: re-save them as safetensors."
        if any(p.endswith(".bin") for p in present)
        else ""
    )
    raise ConversionError(f"no {weights_name} (or sharded index) in {folder}; found {present}.{hint}")


def read_weight_files(files: Iterable[Path]) -> dict[str, np.ndarray]:
    """The tensors of all `files` (the shards of one checkpoint) in one dict."""
    tensors = {}
    for file in files:
        tensors.update(read_safetensors(file))
    return tensors
