"""User paths: local ones made absolute once (Orbax and the loader's workers need that), URLs left alone."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def is_remote(path: str) -> bool:
    """A URL such as gs://bucket/x, read by the code that needs it rather than checked here."""
    return "://" in path


def absolute(path: str) -> str:
    """`path` as an absolute local path (~ expanded); a URL unchanged."""
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Runs `write` on a temporary file beside `path`, then renames it there: readers never see half a file,
    and an interrupted write leaves no file at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
