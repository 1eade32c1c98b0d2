"""The metadata file of a video folder: one row per clip, as CSV (with a header) or JSON Lines.

Columns: `path` (required; relative to the folder, or absolute), then any of
`caption` (str), `label` (int), `start` / `end` (seconds within the file; empty
means the file's start / end) and `split` (e.g. train / test). Other columns are
ignored. Errors name the file and line so the user knows what to fix.
"""

import csv
import dataclasses
import json
import math
import os

from pyoco_jax.errors import UserError

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")


class MetadataError(UserError):
    """A metadata file the user must fix; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class VideoRow:
    path: str
    caption: str = ""
    label: int | None = None  # None: the file has no labels (all rows have one or none do).
    start: float = 0.0
    end: float | None = None  # None: to the end of the file.
    split: str = ""


def resolve_metadata(folder: str, metadata: str = "") -> str:
    """The metadata file: `metadata` (relative to `folder` unless absolute), else folder/metadata.{csv,jsonl}."""
    if metadata:
        path = metadata if os.path.isabs(metadata) else os.path.join(folder, metadata)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"metadata file {path} does not exist")
        return path
    found = [os.path.join(folder, name) for name in METADATA_NAMES if os.path.isfile(os.path.join(folder, name))]
    if not found:
        raise FileNotFoundError(
            f"no metadata file in {folder}: add one of {METADATA_NAMES} (columns path, caption, label, start, end) "
            "or name it with data.metadata"
        )
    return found[0]


def read_metadata(path: str) -> list[VideoRow]:
    """Parses a .csv or .jsonl metadata file into rows, in file order."""
    if path.endswith(".jsonl") or path.endswith(".json"):
        records = _jsonl_records(path)
    elif path.endswith(".csv"):
        records = _csv_records(path)
    else:
        raise MetadataError(f"metadata file {path} must end in .csv or .jsonl")
    rows = [_row(record, path, line) for line, record in records]
    if not rows:
        raise MetadataError(f"metadata file {path} has no rows")
    has_label = [line for line, record in records if _present(record.get("label"))]
    if has_label and len(has_label) != len(rows):
        missing = next(line for line, record in records if not _present(record.get("label")))
        raise MetadataError(f"{path}:{missing}: this row has no label while others do; give every row a label")
    return rows


def select_split(rows: list[VideoRow], split: str, path: str) -> list[VideoRow]:
    """The rows of `split`; a file without a split column is one split, whatever its name."""
    if not any(row.split for row in rows):
        return rows
    chosen = [row for row in rows if row.split == split]
    if not chosen:
        names = sorted({row.split for row in rows})
        raise MetadataError(f"{path} has no rows with split {split!r}; its splits are {names} (set data.split)")
    return chosen


def _csv_records(path: str) -> list[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise MetadataError(
                f"{path}: the first line must be a header with a 'path' column, not {reader.fieldnames}"
            )
        return [(reader.line_num, record) for record in reader]


def _jsonl_records(path: str) -> list[tuple[int, dict]]:
    records = []
    with open(path, encoding="utf-8") as file:
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise MetadataError(f"{path}:{line}: not a JSON object ({err})") from err
            if not isinstance(record, dict):
                raise MetadataError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
            records.append((line, record))
    return records


def _present(value) -> bool:
    return value is not None and str(value).strip() != ""


def _row(record: dict, path: str, line: int) -> VideoRow:
    where = f"{path}:{line}"
    video = str(record.get("path") or "").strip()
    if not video:
        raise MetadataError(f"{where}: empty 'path'")
    try:
        label = int(str(record["label"]).strip()) if _present(record.get("label")) else None
    except ValueError as err:
        raise MetadataError(f"{where}: label {record['label']!r} is not an integer class index") from err
    if label is not None and label < 0:
        raise MetadataError(f"{where}: label {label} is negative")
    start = _seconds(record.get("start"), where, "start")
    end = _seconds(record.get("end"), where, "end")
    start = 0.0 if start is None else start
    if end is not None and end <= start:
        raise MetadataError(f"{where}: end {end} must be after start {start}")
    caption = record.get("caption")
    return VideoRow(
        path=video,
        caption="" if caption is None else str(caption),
        label=label,
        start=start,
        end=end,
        split=str(record.get("split") or "").strip(),
    )


def _seconds(value, where: str, name: str) -> float | None:
    if not _present(value):
        return None
    try:
        seconds = float(value)
    except ValueError as err:
        raise MetadataError(f"{where}: {name} {value!r} is not a number of seconds") from err
    if not math.isfinite(seconds) or seconds < 0:
        raise MetadataError(f"{where}: {name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds
