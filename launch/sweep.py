"""Run a sweep (configs/sweeps/*.py): check every run's config, train the runs here one after another or hand
each to launch/tpu.py or launch/slurm.py, and write summary.csv and summary.md.

    python launch/sweep.py configs/sweeps/noise_prior.py --workdir runs/sweeps/noise_prior --config.train.num_steps=200
    python launch/sweep.py configs/sweeps/noise_prior.py --workdir runs/sweeps/noise_prior --summarize-only
    python launch/sweep.py configs/sweeps/noise_prior.py --workdir gs://BUCKET/sweeps/noise_prior --launcher tpu \\
        --dry-run -- --name=pyoco-{index} --accelerator-type=v6e-8 --zone=us-east1-d --project=my-project
    python launch/sweep.py configs/sweeps/noise_prior.py --workdir /shared/sweeps/noise_prior --launcher slurm \\
        -- --nodes=1 --gpus-per-node=8 --time=04:00:00

Run NAME lives in <workdir>/NAME/. A run whose final checkpoint (checkpoints/<train.num_steps>) exists is
skipped; any other resumes from its latest checkpoint, so the same command continues an interrupted sweep.
Arguments after `--` go to the launcher, with {name} and {index} replaced per run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import importlib.util
import io
import json
import math
import posixpath
import shlex
import statistics
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import orbax.checkpoint as ocp
from etils import epath

from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.config_values import split_override
from pyoco_jax.errors import UserError
from pyoco_jax.sweep import Sweep, SweepError, format_value, load_sweep

REPO = Path(__file__).resolve().parents[1]

LAUNCHERS = ("local", "tpu", "slurm")
EXIT_CODE = "exit_code"  # <run>/exit_code: how the last local attempt ended (removed when the next starts).
LAST = 5  # Logged losses averaged for the "mean of the last few" column.
STATUSES = ("done", "running", "failed", "not started")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    index: int  # Position in the whole sweep (stable under --only).
    values: dict  # The swept overrides, as the sweep file gives them.
    overrides: tuple[str, ...]  # key=value, the swept ones then the command line's.
    num_steps: int
    workdir: str


def base_config(sweep: Sweep) -> Path:
    config = REPO / sweep.config
    if not config.is_file():
        raise SweepError(f"{sweep.path}: CONFIG {sweep.config!r} is not a file relative to the repository {REPO}")
    return config


def parse_set(items: Sequence[str], swept: Sequence[str]) -> tuple[str, ...]:
    """`--config.key=value` items (the last of a key wins); a swept key may not be set (every run would be the same)."""
    overrides: dict[str, str] = {}
    for item in items:
        key, value = split_override(item)
        if key in swept:
            raise SweepError(f"{item}: {key} is swept by this sweep; edit the sweep file instead")
        overrides.pop(key, None)
        overrides[key] = f"{key}={value}"
    return tuple(overrides.values())


def expand(sweep: Sweep, workdir: str, extra: Sequence[str] = ()) -> list[Run]:
    """Every run with its config loaded and validated; ConfigError names the run and the key to change."""
    config_path, extra = base_config(sweep), parse_set(extra, sweep.keys)
    runs: list[Run] = []
    by_config: dict[str, str] = {}
    for index, (name, values) in enumerate(sweep.runs.items()):
        overrides = (*(f"{key}={format_value(value, workdir)}" for key, value in values.items()), *extra)
        try:
            config = load_config(str(config_path), overrides, produced_under=workdir)
        except ConfigError as err:
            raise ConfigError(f"run {name}: {err}") from None
        text = config.to_json_best_effort(sort_keys=True)
        if text in by_config:
            raise SweepError(f"runs {by_config[text]} and {name} have the same config: drop one from the sweep")
        by_config[text] = name
        runs.append(Run(name, index, values, overrides, int(config.train.num_steps), posixpath.join(workdir, name)))
    return runs


def select(runs: list[Run], only: Sequence[str] | None) -> list[Run]:
    if not only:
        return runs
    names = [run.name for run in runs]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise SweepError(f"--only {' '.join(unknown)}: no such run; the runs are: {' '.join(names)}")
    return [run for run in runs if run.name in only]


# ---- What a run's workdir says about it. ----


def status(run: Run) -> str:
    """done (final checkpoint), failed (a local attempt ended before it), running (started), or not started."""
    root = epath.Path(run.workdir)
    final = root / "checkpoints" / str(run.num_steps)
    if final.exists() and ocp.utils.is_checkpoint_finalized(final):  # Not a save still being written.
        return "done"
    if (root / EXIT_CODE).exists():
        return "failed"
    if any((root / name).exists() for name in ("metrics.jsonl", "checkpoints", "train.log")):
        return "running"
    return "not started"


def read_metrics(path: epath.Path) -> list[dict]:
    """metrics.jsonl by step; a resumed run logs the steps after its checkpoint again, and the later line wins."""
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # A line cut short when a run was killed.
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            step = int(record["step"])  # An evaluation logs its own line at a step: merge, later keys winning.
            by_step[step] = {**by_step.get(step, {}), **record}
    return [by_step[step] for step in sorted(by_step)]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _series(records: list[dict], key: str) -> list[float]:
    return [float(record[key]) for record in records if _number(record.get(key))]


def summarize(run: Run, keys: Sequence[str]) -> dict[str, object]:
    """One summary row: swept values, status, final step, losses, median throughput, last eval/* values."""
    records = read_metrics(epath.Path(run.workdir) / "metrics.jsonl")
    losses = _series(records, "loss")
    finite = [loss for loss in losses if math.isfinite(loss)]
    row: dict[str, object] = {"name": run.name}
    for key in keys:
        row[key] = format_value(run.values[key]) if key in run.values else None
    row["status"] = status(run)
    row["final_step"] = int(records[-1]["step"]) if records else None
    row["final_loss"] = losses[-1] if losses else None
    row[f"mean_loss_last_{LAST}"] = statistics.fmean(losses[-LAST:]) if losses else None
    row["best_loss"] = min(finite) if finite else None
    for key in ("steps_per_second", "frames_per_second"):
        values = _series(records, key)
        row[key] = statistics.median(values) if values else None
    evaluations = [*records, *read_evaluations(epath.Path(run.workdir) / "eval")]
    for record in sorted(evaluations, key=lambda r: r["step"]):  # The newest step's value of each metric stays.
        row.update({key: float(value) for key, value in record.items() if key.startswith("eval/") and _number(value)})
    return row


def read_evaluations(folder: epath.Path) -> list[dict]:
    """What `pyoco-eval` wrote: <run>/eval/step_<N>.json, one record per evaluated checkpoint."""
    records = []
    for path in sorted(folder.glob("step_*.json")) if folder.exists() else []:
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(record, dict) and _number(record.get("step")):
            records.append(record)
    return records


def rank(rows: list[dict[str, object]], by: str) -> list[dict[str, object]]:
    """Rows ordered by column `by` (ascending; `-name` descending), with a `rank` column; rows without it last."""
    column, descending = by.removeprefix("-"), by.startswith("-")
    scored = sorted((row for row in rows if _number(row.get(column))), key=lambda row: row[column], reverse=descending)
    ranked = [{"rank": i + 1, **row} for i, row in enumerate(scored)]
    return ranked + [{"rank": None, **row} for row in rows if not _number(row.get(column))]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_summary(sweep: Sweep, runs: list[Run], workdir: str, rank_by: str = "") -> list[dict[str, object]]:
    """<workdir>/summary.csv (full precision) and summary.md (a GitHub table), ranked by `rank_by` if given."""
    rows = [summarize(run, sweep.keys) for run in runs]
    if rank_by:
        rows = rank(rows, rank_by)
    columns = list(dict.fromkeys(column for row in rows for column in row))
    evals = sorted(column for column in columns if column.startswith("eval/"))
    columns = [column for column in columns if not column.startswith("eval/")] + evals
    root = epath.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
    (root / "summary.csv").write_text(text.getvalue())
    counts = ", ".join(f"{sum(row['status'] == s for row in rows)} {s}" for s in STATUSES)
    numeric = set(columns) - {"name", "status", *sweep.keys}
    ranking = (
        f" Ranked by {rank_by.removeprefix('-')} ({'highest' if rank_by.startswith('-') else 'lowest'} first)."
        if rank_by
        else ""
    )
    lines = [
        f"# Sweep `{sweep.path}`",
        "",
        f"Base config `{sweep.config}`, workdir `{workdir}`; {len(rows)} runs: {counts}.",
        f"Training loss: last logged, mean of the last {LAST} logged, lowest. Steps/s and frames/s: median of "
        "the logged values. failed: the last local attempt ended before the final step (see the run's train.log); "
        f"running the sweep again resumes it. eval/*: the newest evaluation (pyoco-eval).{ranking}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if column in numeric else "---" for column in columns) + "|",
        *("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows),
    ]
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


# ---- Running here, one run after another. ----


def train_command(config: Path, run: Run) -> list[str]:
    overrides = [f"--config.{item}" for item in run.overrides]
    return [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={config}", f"--workdir={run.workdir}", *overrides]


def train_locally(config: Path, run: Run) -> int:
    """pyoco-train for `run`, output appended to <run>/train.log; returns its exit status (also in <run>/exit_code)."""
    root = Path(run.workdir)
    root.mkdir(parents=True, exist_ok=True)
    (root / EXIT_CODE).unlink(missing_ok=True)
    command = train_command(config, run)
    with open(root / "train.log", "a") as log:
        log.write(f"=== {datetime.datetime.now().isoformat(timespec='seconds')} {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = process.wait()
        except KeyboardInterrupt:  # pyoco-train got the same SIGINT: let it close its files, then stop the sweep.
            (root / EXIT_CODE).write_text(f"{process.wait()}\n")
            raise
    (root / EXIT_CODE).write_text(f"{code}\n")
    return code


def run_locally(config: Path, runs: list[Run]) -> None:
    for position, run in enumerate(runs, 1):
        prefix = f"[{position}/{len(runs)}] {run.name}:"
        if status(run) == "done":
            print(f"{prefix} done, skipped", flush=True)
            continue
        print(f"{prefix} training, log {run.workdir}/train.log", flush=True)
        code = train_locally(config, run)
        outcome = status(run)
        print(f"{prefix} {outcome}" + (f" (exit {code}; see its train.log)" if outcome != "done" else ""), flush=True)


def report_if_done(sweep: Sweep, rows: list[dict[str, object]], workdir: str, extra: Sequence[str]) -> int:
    """Runs the sweep file's `report` once every run is done, with the base config and the command line's
    overrides (what every run shares); 0, or 1 with a line on what went wrong."""
    if sweep.report is None:
        return 0
    pending = [row["name"] for row in rows if row["status"] != "done"]
    if pending:
        print(f"report: waiting for {len(pending)} runs ({', '.join(pending[:3])} ...)")
        return 0
    try:
        config = load_config(str(base_config(sweep)), parse_set(extra, sweep.keys), produced_under=workdir)
        sweep.report(workdir, dict(sweep.runs), config)
    except UserError as err:
        print(f"launch/sweep.py: report: {err}", file=sys.stderr)
        return 1
    return 0


# ---- Handing runs to launch/tpu.py or launch/slurm.py. ----


def load_launcher(name: str) -> types.ModuleType:
    """launch/<name>.py as a module (launch/ holds scripts, not a package)."""
    module_name = f"launch_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "launch" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def launcher_command(launcher: str, sweep: Sweep, run: Run, launcher_args: Sequence[str]) -> list[str]:
    """`python launch/tpu.py train ...` or `python launch/slurm.py ...` for one run."""
    passed = [arg.replace("{name}", run.name).replace("{index}", str(run.index)) for arg in launcher_args]
    job = [f"--config={sweep.config}", f"--workdir={run.workdir}", *(f"--config.{item}" for item in run.overrides)]
    script = str(REPO / "launch" / f"{launcher}.py")
    if launcher == "tpu":
        return [sys.executable, script, "train", *passed, *job]
    named = any(arg == "--job-name" or arg.startswith("--job-name=") for arg in passed)
    job_name = [] if named else [f"--job-name={Path(sweep.path).stem}-{run.name}"]
    return [sys.executable, script, *job_name, *passed, *job]


def check_launcher_command(launcher: str, run: Run, command: list[str]) -> None:
    """The launcher's own dry run of `command` must pass, so a bad flag stops the sweep before anything starts."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = load_launcher(launcher).main([*command[2:], "--dry-run"])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    if code:
        raise SweepError(f"run {run.name}: launch/{launcher}.py refuses the command: {err.getvalue().strip()}")


def launch_remote(launcher: str, sweep: Sweep, runs: list[Run], launcher_args: Sequence[str], dry_run: bool) -> int:
    if launcher == "tpu" and len(runs) > 1 and not any("{" in arg for arg in launcher_args):
        raise SweepError(
            "every run needs its own TPU VM (launch/tpu.py train refuses while one runs there): "
            "pass e.g. `-- --name=pyoco-{index}` and create and set up those TPUs first"
        )
    commands = [launcher_command(launcher, sweep, run, launcher_args) for run in runs]
    for run, command in zip(runs, commands, strict=True):
        check_launcher_command(launcher, run, command)
    failures = 0
    for run, command in zip(runs, commands, strict=True):
        if dry_run:
            print(shlex.join(command))
        elif status(run) == "done":
            print(f"{run.name}: done, skipped", flush=True)
        else:
            print("+", shlex.join(command), flush=True)
            failures += subprocess.run(command).returncode != 0
    return failures


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="launch/sweep.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("sweep", help="Sweep file, e.g. configs/sweeps/noise_prior.py.")
    parser.add_argument("--workdir", required=True, help="Each run goes to WORKDIR/<run name>; summaries to WORKDIR.")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local", help="Where runs go (default: here).")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands; run nothing, read no workdir.")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="Run (or launch) only these runs.")
    parser.add_argument("--summarize-only", action="store_true", help="Only write summary.csv and summary.md.")
    parser.add_argument(
        "--rank-by",
        default="",
        metavar="COLUMN",
        help="Order the summary by this column, e.g. eval/fvd (-COLUMN: highest first).",
    )
    overrides = [arg for arg in argv[:cut] if arg.startswith("--config.")]  # --config.key=value: every run.
    args = parser.parse_args([arg for arg in argv[:cut] if not arg.startswith("--config.")])
    args.set = overrides
    return args, argv[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    args, launcher_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if launcher_args and args.launcher == "local":
            raise SweepError(f"arguments after -- go to --launcher tpu or slurm, not local: {launcher_args}")
        if args.launcher == "local" and "://" in args.workdir and not args.summarize_only:
            raise SweepError(f"--workdir {args.workdir}: local runs need a local workdir (they write train.log)")
        sweep = load_sweep(args.sweep)
        runs = expand(sweep, args.workdir, args.set)
        selected = select(runs, args.only)
        if args.summarize_only:
            rows = write_summary(sweep, runs, args.workdir, args.rank_by)
            print(f"wrote {args.workdir}/summary.csv and summary.md")
            return report_if_done(sweep, rows, args.workdir, args.set)
        if args.launcher != "local":
            failures = launch_remote(args.launcher, sweep, selected, launcher_args, args.dry_run)
            if not args.dry_run:
                print(
                    f"submitted; later: python launch/sweep.py {args.sweep} --workdir {args.workdir} --summarize-only"
                )
            return int(failures > 0)
        config = base_config(sweep)
    except (SweepError, ConfigError) as err:
        print(f"launch/sweep.py: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for run in selected:
            print(shlex.join(train_command(config, run)), ">>", shlex.quote(f"{run.workdir}/train.log"), "2>&1")
        return 0
    try:
        run_locally(config, selected)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        rows = write_summary(sweep, runs, args.workdir, args.rank_by)
        print(f"summary: {args.workdir}/summary.md")
    selected_names = {run.name for run in selected}
    failed = any(row["status"] != "done" for row in rows if row["name"] in selected_names)
    return int(failed) or report_if_done(sweep, rows, args.workdir, args.set)


if __name__ == "__main__":
    sys.exit(main())
