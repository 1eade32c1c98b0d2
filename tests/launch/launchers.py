"""Imports the launchers by path: launch/ holds scripts run as `python launch/tpu.py`, not a package."""

import importlib.util
import pathlib
import sys
import types

REPO = pathlib.Path(__file__).parents[2]


def load(name: str) -> types.ModuleType:
    module_name = f"launch_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "launch" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[module_name]
