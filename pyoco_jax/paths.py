"""User paths: local ones made absolute once (Orbax and the loader's workers need that), URLs left alone."""

import os


def is_remote(path: str) -> bool:
    """A URL such as gs://bucket/x, read by the code that needs it rather than checked here."""
    return "://" in path


def absolute(path: str) -> str:
    """`path` as an absolute local path (~ expanded); a URL unchanged."""
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))
