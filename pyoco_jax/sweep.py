"""Sweeps: lists of config overrides (one dict per run), the helpers that build them, and the names runs get.

A sweep file (configs/sweeps/*.py) sets `CONFIG`, the base config, and `get_sweep()`, which returns a list of
dicts such as `{"noise.prior": "mixed", "noise.alpha": 1.0}`. Each run is named after its overrides
(`prior-mixed_alpha-1.0`), so its workdir stays the same when the sweep grows and a rerun resumes it.
`SHORT_NAMES = {"optim.learning_rate": "lr"}` in the file shortens names; a key's default short name is its
last part; an empty short name leaves the key out of names (for keys that only change together with a
named one). `{sweep}` in a string value stands for the sweep's workdir, so a run can start from an earlier
run's output (`{"train.init_from": "{sweep}/stage-image"}`; its name keeps only `stage-image`); such a run
must come after the one it reads, and the local launcher runs them in order. A file may also define
`report(workdir, runs, config)`, called once every run is done (a study's own evaluation and write-up;
`runs` maps names to overrides, `config` is the base config with the command line's overrides).
`launch/sweep.py` runs sweeps.
Pure Python: nothing here imports JAX or the trainer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence

from pyoco_jax.errors import UserError

Value = bool | int | float | str | tuple | list
SWEEP_DIR = "{sweep}"  # In a string value: the sweep's workdir.
Run = dict[str, Value]

MAX_NAME_LENGTH = 120
_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class SweepError(UserError):
    """A mistake in a sweep definition; the message says which run or key and what to change."""


def axis(key: str, values: Sequence[Value]) -> list[Run]:
    """One run per value of `key`: `axis("noise.alpha", [1.0, 2.0])` -> `[{"noise.alpha": 1.0}, {...: 2.0}]`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SweepError(f"axis {key!r}: give a list of values, got {values!r}")
    if not values:
        raise SweepError(f"axis {key!r} has no values")
    return [{key: value} for value in values]


def _merge(runs: Sequence[Mapping[str, Value]]) -> Run:
    merged: Run = {}
    for run in runs:
        shared = sorted(set(merged) & set(run))
        if shared:
            raise SweepError(f"{shared} set by more than one combined axis: each key may come from one axis only")
        merged.update(run)
    return merged


def product(*sweeps: Sequence[Mapping[str, Value]]) -> list[Run]:
    """Every combination of one run from each sweep, merged; the first sweep varies slowest."""
    return [_merge(combination) for combination in itertools.product(*sweeps)]


def zipped(*sweeps: Sequence[Mapping[str, Value]]) -> list[Run]:
    """The i-th runs of all sweeps merged into one run: the sweeps must have the same length."""
    lengths = [len(sweep) for sweep in sweeps]
    if len(set(lengths)) > 1:
        raise SweepError(f"zipped sweeps need the same number of runs, got {lengths}")
    return [_merge(runs) for runs in zip(*sweeps, strict=True)]


def union(*sweeps: Sequence[Mapping[str, Value]]) -> list[Run]:
    """All runs of all sweeps, in order (e.g. one iid baseline plus a grid of correlated priors)."""
    return [dict(run) for sweep in sweeps for run in sweep]


def format_value(value: Value, workdir: str = SWEEP_DIR) -> str:
    """The text of `--config.key=TEXT` that sets `value` (strings go unquoted, as the command line takes them),
    with `{sweep}` replaced by `workdir`."""
    if isinstance(value, str):
        return value.replace(SWEEP_DIR, workdir)
    return _literal(value)


def _literal(value: Value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = ",".join(_literal(item) for item in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    raise TypeError(f"{type(value).__name__} {value!r}")


def _name_number(value: int | float) -> str:
    """Shortest faithful text: 1e-3 rather than 0.001, but 0.5 and 1.0 as they are."""
    text = repr(value)
    if isinstance(value, float) and value != 0 and abs(value) != float("inf") and value == value:
        mantissa, exponent = f"{value:e}".split("e")
        mantissa = repr(float(mantissa)).removesuffix(".0")
        scientific = f"{mantissa}e{int(exponent)}"
        if float(scientific) == value and len(scientific) < len(text):
            return scientific
    return text


def name_value(value: Value) -> str:
    """A value as it appears in a run name: filesystem-safe, tuples joined by '-'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return _name_number(value)
    if isinstance(value, (tuple, list)):
        return "-".join(name_value(item) for item in value)
    return _UNSAFE.sub("-", value.replace(SWEEP_DIR + "/", "")).strip("-") or "empty"


def short_names(keys: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """The short name of every key (alias, else its last part); two keys may not share one."""
    aliases = aliases or {}
    shorts = {key: aliases.get(key, key.rsplit(".", 1)[-1]) for key in keys}
    seen: dict[str, str] = {}
    for key, short in shorts.items():
        if short == "":
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", short):
            raise SweepError(f"short name {short!r} of {key!r}: use letters, digits, '_', '.', '+' or '-'")
        if short in seen:
            raise SweepError(
                f"{seen[short]!r} and {key!r} would both be called {short!r} in run names: "
                f'add SHORT_NAMES = {{"{key}": "..."}} to the sweep file'
            )
        seen[short] = key
    return shorts


def run_name(run: Mapping[str, Value], shorts: Mapping[str, str]) -> str:
    """`{"noise.prior": "mixed", "noise.alpha": 1.0}` -> `prior-mixed_alpha-1.0` (keys in the run's order)."""
    if not run:
        return "base"
    return "_".join(f"{shorts[key]}-{name_value(value)}" for key, value in run.items() if shorts[key]) or "base"


def check_run(index: int, run: object) -> Run:
    """Raises SweepError unless `run` is a dict of dotted config keys to values the command line can carry."""
    if not isinstance(run, Mapping):
        raise SweepError(f"run {index}: expected a dict of config overrides, got {type(run).__name__} {run!r}")
    for key, value in run.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise SweepError(f"run {index}: {key!r} is not a config key like 'noise.alpha'")
        try:
            _literal(value)
        except TypeError as err:
            raise SweepError(
                f"run {index}: {key}={value!r}: a value must be a bool, int, float, str or a tuple of them ({err})"
            ) from None
    return dict(run)


def name_runs(runs: Sequence[Mapping[str, Value]], aliases: Mapping[str, str] | None = None) -> dict[str, Run]:
    """Runs by name, in sweep order; raises SweepError on a bad run, a name too long, or two runs with one name."""
    checked = [check_run(index, run) for index, run in enumerate(runs)]
    keys = list(dict.fromkeys(key for run in checked for key in run))
    shorts = short_names(keys, aliases)
    named: dict[str, Run] = {}
    first_index: dict[str, int] = {}
    for index, run in enumerate(checked):
        name = run_name(run, shorts)
        if len(name) > MAX_NAME_LENGTH:
            raise SweepError(
                f"run {index}: name {name!r} is longer than {MAX_NAME_LENGTH}: shorten it with SHORT_NAMES"
            )
        if name in named:
            raise SweepError(
                f"runs {first_index[name]} ({named[name]}) and {index} ({run}) are both named {name!r}: "
                "remove the duplicate or make their values differ"
            )
        named[name], first_index[name] = run, index
    return named


@dataclasses.dataclass(frozen=True)
class Sweep:
    path: str
    config: str  # The base config, relative to the repository root (as the launchers take it).
    runs: dict[str, Run]  # name -> overrides, in sweep order.
    report: Callable[[str, dict[str, Run], object], None] | None = None  # Called when every run is done.

    @property
    def keys(self) -> list[str]:
        """Every swept key, in order of first appearance."""
        return list(dict.fromkeys(key for run in self.runs.values() for key in run))


def load_sweep(path: str) -> Sweep:
    """Imports a sweep file and names its runs; SweepError says what the file lacks."""
    spec = importlib.util.spec_from_file_location(f"pyoco_sweep_{pathlib.Path(path).stem}", path)
    if spec is None or not path.endswith(".py"):
        raise SweepError(f"{path}: a sweep is a Python file, e.g. configs/sweeps/noise_prior.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    config = getattr(module, "CONFIG", None)
    if not isinstance(config, str) or not config:
        raise SweepError(f'{path}: set CONFIG = "configs/<base>.py", the config every run starts from')
    if not callable(getattr(module, "get_sweep", None)):
        raise SweepError(f"{path}: define get_sweep() returning a list of override dicts")
    runs = module.get_sweep()
    if not isinstance(runs, (list, tuple)) or not runs:
        raise SweepError(f"{path}: get_sweep() must return a non-empty list of override dicts, got {runs!r}")
    report = getattr(module, "report", None)
    if report is not None and not callable(report):
        raise SweepError(f"{path}: report must be a function report(workdir, runs, config)")
    return Sweep(path, config, name_runs(runs, getattr(module, "SHORT_NAMES", None)), report)
