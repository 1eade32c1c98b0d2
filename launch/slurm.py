"""Submit pyoco-train to a SLURM GPU cluster as one batch job (launch/slurm.sbatch), one task per GPU.

    python launch/slurm.py --nodes 4 --gpus-per-node 8 --partition gpu --time 24:00:00 \\
        --config configs/tiny.py --workdir /shared/runs/tiny [--config.key=value ...] [--dry-run]

Checks the request before anything is queued, then runs (or, with --dry-run, prints) the sbatch command.
Submitting the same command again continues the run from the workdir's latest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_GPUS_PER_NODE = 16


class LaunchError(Exception):
    """A mistake in the arguments, with the fix in the message."""


@dataclasses.dataclass(frozen=True)
class Job:
    nodes: int
    gpus_per_node: int
    config: str
    workdir: str
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = None
    job_name: str | None = None
    overrides: tuple[str, ...] = ()  # --config.key=value
    env: tuple[str, ...] = ()  # NAME=VALUE for every task
    venv: str | None = None  # Default: <repo>/.venv


def time_limit_seconds(value: str) -> int:
    """SLURM's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if match is None:
        raise LaunchError(f"--time {value!r}: write it as HH:MM:SS, MM, MM:SS or D-HH[:MM[:SS]], e.g. 24:00:00")
    days, first, second, third = (int(x) if x is not None else None for x in match.groups())
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = first, second or 0, third or 0
    elif third is not None:  # H:M:S
        hours, minutes, seconds = first, second, third
    else:  # M[:S]
        hours, minutes, seconds = 0, first, second or 0
    if (days is not None and hours >= 24) or (third is not None and minutes >= 60) or seconds >= 60:
        raise LaunchError(f"--time {value!r}: hours (after D-) must be < 24, minutes and seconds < 60")
    total = (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise LaunchError(f"--time {value!r}: the time limit must be positive")
    return total


def check_job(job: Job, repo: Path = REPO) -> None:
    if job.nodes < 1:
        raise LaunchError(f"--nodes {job.nodes}: ask for at least one node")
    if not 1 <= job.gpus_per_node <= MAX_GPUS_PER_NODE:
        raise LaunchError(f"--gpus-per-node {job.gpus_per_node}: must be 1..{MAX_GPUS_PER_NODE}")
    if job.cpus_per_task is not None and job.cpus_per_task < 1:
        raise LaunchError(f"--cpus-per-task {job.cpus_per_task}: must be >= 1")
    if job.time is not None:
        time_limit_seconds(job.time)
    config_file = job.config.split(":", 1)[0]
    if not (repo / config_file).is_file():
        raise LaunchError(f"--config {job.config!r}: no such config file (relative to {repo}), e.g. configs/tiny.py")
    if "://" in job.workdir and not job.workdir.startswith("gs://"):
        raise LaunchError(f"--workdir {job.workdir!r}: use a path on a shared filesystem or gs://BUCKET/PATH")
    for item in job.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=[^,]*", item):
            raise LaunchError(f"--env {item!r}: write it as NAME=VALUE (no commas: sbatch --export splits on them)")
    for item in job.overrides:
        if not re.fullmatch(r"--config\.[\w.]+=.*", item):
            raise LaunchError(f"override {item!r}: write it as --config.key=value")


def log_dir(repo: Path = REPO) -> Path:
    return repo / "runs" / "slurm"


def sbatch_command(job: Job, repo: Path = REPO, cwd: Path | None = None) -> list[str]:
    """The sbatch command line for `job` (validated first); a local workdir becomes absolute."""
    check_job(job, repo)
    workdir = job.workdir
    if "://" not in workdir:
        workdir = str(((cwd or Path.cwd()) / workdir).resolve())
    venv = job.venv or str(repo / ".venv")
    name = job.job_name or "pyoco-" + Path(job.config.split(":", 1)[0]).stem
    command = [
        "sbatch",
        f"--job-name={name}",
        f"--nodes={job.nodes}",
        f"--gpus-per-node={job.gpus_per_node}",
        f"--ntasks-per-node={job.gpus_per_node}",
    ]
    optional = {"time": job.time, "partition": job.partition, "account": job.account, "qos": job.qos}
    optional["cpus-per-task"] = job.cpus_per_task
    command += [f"--{flag}={value}" for flag, value in optional.items() if value is not None]
    command += [
        f"--output={log_dir(repo)}/%x-%j.out",
        "--export=" + ",".join(["ALL", f"PYOCO_REPO={repo}", f"PYOCO_VENV={venv}", *job.env]),
        str(repo / "launch" / "slurm.sbatch"),
        job.config,
        workdir,
        *job.overrides,
    ]
    return command


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, Job]:
    parser = argparse.ArgumentParser(prog="launch/slurm.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--nodes", type=int, required=True, help="Nodes (>= 1).")
    parser.add_argument("--gpus-per-node", type=int, required=True, help=f"GPUs per node, 1..{MAX_GPUS_PER_NODE}.")
    parser.add_argument("--time", help="Time limit: HH:MM:SS, MM, MM:SS or D-HH[:MM[:SS]] (default: partition's).")
    parser.add_argument("--partition", help="Partition (default: the cluster's).")
    parser.add_argument("--account", help="Account to charge.")
    parser.add_argument("--qos", help="Quality of service.")
    parser.add_argument("--cpus-per-task", type=int, help="CPU cores per GPU task (data loading runs on them).")
    parser.add_argument("--job-name", help="Default: pyoco-<config name>.")
    parser.add_argument("--config", required=True, help="Config file in the repository, e.g. configs/tiny.py.")
    parser.add_argument("--workdir", required=True, help="On a filesystem every node sees, or gs://BUCKET/PATH.")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every task (repeatable).")
    parser.add_argument("--venv", help="Virtual environment with pyoco_jax installed (default: <repo>/.venv).")
    parser.add_argument("--dry-run", action="store_true", help="Print the sbatch command instead of running it.")
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if not re.match(r"--config\.[\w.]+=", item)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (config overrides are written --config.key=value)")
    job = Job(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        config=args.config,
        workdir=args.workdir,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        cpus_per_task=args.cpus_per_task,
        job_name=args.job_name,
        overrides=tuple(extra),
        env=tuple(args.env),
        venv=args.venv,
    )
    return args, job


def main(argv: Sequence[str] | None = None) -> int:
    args, job = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        command = sbatch_command(job)
    except LaunchError as err:
        print(f"launch/slurm.py: error: {err}", file=sys.stderr)
        return 2
    if job.nodes > 1 and "://" not in job.workdir:
        print(f"launch/slurm.py: {job.nodes} nodes share --workdir: it must be on a shared filesystem", file=sys.stderr)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    log_dir().mkdir(parents=True, exist_ok=True)
    print("+", shlex.join(command), file=sys.stderr, flush=True)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
