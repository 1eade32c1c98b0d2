"""The launchers as modules: launch/ holds scripts run as `python launch/tpu.py`, and sweep.py loads its siblings."""

from launch.sweep import REPO, load_launcher

load = load_launcher
__all__ = ["REPO", "load"]
