"""Cloud TPU VMs for pyoco-train: create, set up, train, follow logs, status, delete.

    python launch/tpu.py create --name pyoco --accelerator-type v5p-32 --zone us-east5-a --project my-project
    python launch/tpu.py setup  --name pyoco --zone us-east5-a --project my-project
    python launch/tpu.py train  --name pyoco --accelerator-type v5p-32 --zone us-east5-a --project my-project \\
        --config configs/tiny.py --workdir gs://my-bucket/runs/tiny [--config.key=value ...]
    python launch/tpu.py logs|status|delete --name pyoco --zone us-east5-a --project my-project

Each subcommand first looks at what exists (the TPU, the code revision installed on every worker, a
running training process) and does only what is missing, so any step can be rerun after a failure.
`--dry-run` prints the commands (one per line, shell-quoted) and runs nothing. The planning functions
(`plan_*`) are pure: they turn arguments and an observed `State` into commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REMOTE_ROOT = "$HOME/pyoco_jax"  # On every worker: src/, venv/, revision, train.pid, train.log.
REMOTE_TARBALL = "pyoco_jax-src.tar.gz"  # scp destination, relative to the worker's home.
TPU_PACKAGES = ("jax[tpu]", "gcsfs")  # Installed beside `.[video]`: the TPU runtime and gs:// for etils.epath.
PYTHON = "python3.11"
BUSY = 3  # Exit status of a remote check meaning "yes": installed / running (gcloud passes it through).
STOP_TIMEOUT_S = 600  # `train --restart`: how long SIGTERM (checkpoint, then exit) may take before SIGKILL.
# Remote shell helpers: `alive PID` is true for a running pyoco-train (not a zombie left for a non-reaping
# init, nor a process that reused the pid); `training` is true, with $pid set, when train.pid names one.
TRAINING = (
    'alive() { local s; s=$(ps -o stat=,args= -p "$1" 2>/dev/null) || return 1;'
    " [[ $s != Z* && $s == *pyoco-train* ]]; }; "
    f'training() {{ pid=$(cat "{REMOTE_ROOT}/train.pid" 2>/dev/null) && alive "$pid"; }}'
)


class LaunchError(Exception):
    """A mistake in the arguments or the cloud state, with the fix in the message."""


@dataclasses.dataclass(frozen=True)
class Family:
    sizes: tuple[int, ...]
    units_per_worker: int  # Size units (cores or chips) per TPU VM in a multi-host slice.
    single_host_max: int  # Largest size that is one VM.
    runtime_version: str
    described: str


FAMILIES = {
    "v4": Family(tuple(range(8, 4097, 8)), 8, 8, "tpu-ubuntu2204-base", "v4-8..v4-4096 (multiples of 8)"),
    "v5litepod": Family((1, 4, 8, 16, 32, 64, 128, 256), 4, 8, "v2-alpha-tpuv5-lite", "v5litepod-1,4,8,...,256"),
    "v5p": Family(tuple(range(8, 12289, 8)), 8, 8, "v2-alpha-tpuv5", "v5p-8..v5p-12288 (multiples of 8)"),
    "v6e": Family((1, 4, 8, 16, 32, 64, 128, 256), 4, 8, "v2-alpha-tpuv6e", "v6e-1,4,8,...,256"),
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str  # e.g. v5p-32
    family: str
    workers: int  # TPU VMs (hosts) in the slice: one pyoco-train process each.
    runtime_version: str


def parse_accelerator(name: str) -> Accelerator:
    """`v5p-32` -> 4 workers; raises LaunchError listing the valid families for anything else."""
    match = re.fullmatch(r"(v4|v5litepod|v5p|v6e)-(\d+)", name)
    family = FAMILIES.get(match.group(1)) if match else None
    if family is None or int(match.group(2)) not in family.sizes:
        valid = "; ".join(f.described for f in FAMILIES.values())
        raise LaunchError(f"unknown --accelerator-type {name!r}; valid types: {valid}")
    size = int(match.group(2))
    workers = 1 if size <= family.single_host_max else size // family.units_per_worker
    return Accelerator(name, match.group(1), workers, family.runtime_version)


@dataclasses.dataclass(frozen=True)
class Target:
    """Which TPU: a plain TPU VM, or the node of a queued resource with the same name."""

    name: str
    zone: str
    project: str
    queued: bool = False

    def gcloud(self, *words: str) -> list[str]:
        return ["gcloud", "compute", "tpus", *words, f"--zone={self.zone}", f"--project={self.project}"]

    def describe(self) -> list[str]:
        return self.gcloud("queued-resources" if self.queued else "tpu-vm", "describe", self.name)

    def ssh(self, script: str, worker: str = "all") -> list[str]:
        return self.gcloud("tpu-vm", "ssh", self.name, f"--worker={worker}", f"--command={script}")


def resolve_target(name: str, zone: str | None, project: str | None, queued: bool, env: Mapping[str, str]) -> Target:
    """Flags first, then gcloud's environment defaults; a clear error naming the missing flag."""
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise LaunchError(f"--name {name!r}: use lowercase letters, digits and hyphens, starting with a letter")
    project = project or env.get("CLOUDSDK_CORE_PROJECT")
    zone = zone or env.get("CLOUDSDK_COMPUTE_ZONE")
    if not project:
        raise LaunchError("no project: add --project=PROJECT_ID (or set CLOUDSDK_CORE_PROJECT)")
    if not zone:
        raise LaunchError("no zone: add --zone=ZONE, e.g. --zone=us-east5-a (or set CLOUDSDK_COMPUTE_ZONE)")
    return Target(name, zone, project, queued)


@dataclasses.dataclass(frozen=True)
class State:
    """What the checks found; the defaults describe a fresh start."""

    exists: bool = False  # The TPU VM (or queued resource) exists.
    installed: bool = False  # Every worker has this code revision set up.
    running: bool = False  # A pyoco-train process runs on at least one worker.


@dataclasses.dataclass(frozen=True)
class Plan:
    commands: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)  # What is skipped, and why.


@dataclasses.dataclass(frozen=True)
class Source:
    """The code to ship: a git revision (HEAD) or the working tree on top of it."""

    revision: str
    worktree: bool = False
    uncommitted: bool = False  # HEAD shipped while the working tree has changes (they are left behind).

    @property
    def tarball(self) -> str:
        return os.path.join(tempfile.gettempdir(), f"pyoco_jax-{self.revision}.tar.gz")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    config: str  # Path inside the repository, e.g. configs/tiny.py (may end in :arg).
    workdir: str
    overrides: tuple[str, ...] = ()  # --config.key=value
    env: tuple[str, ...] = ()  # KEY=VALUE set for pyoco-train


# ---- Checks run before planning (their exit status becomes State). ----


def exists_check(target: Target) -> list[str]:
    return target.describe()


def outdated_check(target: Target, source: Source) -> list[str]:
    """Exits BUSY on a worker that does not have this revision set up."""
    rev = shlex.quote(source.revision)
    return target.ssh(f'test "$(cat "{REMOTE_ROOT}/revision" 2>/dev/null)" = {rev} || exit {BUSY}')


def running_check(target: Target) -> list[str]:
    """Exits BUSY on a worker where pyoco-train runs."""
    return target.ssh(f"{TRAINING}; if training; then exit {BUSY}; fi")


# ---- Pure planning. ----


def plan_create(
    target: Target,
    accelerator: Accelerator,
    state: State,
    *,
    runtime_version: str | None = None,
    spot: bool = False,
    reserved: bool = False,
) -> Plan:
    if spot and reserved:
        raise LaunchError("--spot and --reserved exclude each other: pick one")
    if state.exists:
        kind = "queued resource" if target.queued else "TPU VM"
        return Plan([], [f"{kind} {target.name} already exists: nothing to create"])
    version = runtime_version or accelerator.runtime_version
    tier = ["--spot"] * spot + ["--reserved"] * reserved
    if target.queued:
        command = target.gcloud(
            "queued-resources",
            "create",
            target.name,
            f"--node-id={target.name}",
            f"--accelerator-type={accelerator.name}",
            f"--runtime-version={version}",
            *tier,
        )
    else:
        command = target.gcloud(
            "tpu-vm", "create", target.name, f"--accelerator-type={accelerator.name}", f"--version={version}", *tier
        )
    return Plan([command])


def setup_script(revision: str) -> str:
    """Runs on every worker: unpack the code, make the venv, install; the revision file is written last."""
    root, rev = REMOTE_ROOT, shlex.quote(revision)
    packages = " ".join(f'"{package}"' for package in TPU_PACKAGES)
    return "; ".join(
        [
            "set -euo pipefail",
            f'if [ "$(cat "{root}/revision" 2>/dev/null)" = {rev} ];'
            f' then echo "$(hostname): {revision} already set up"; exit 0; fi',
            f"if ! command -v {PYTHON} >/dev/null; then sudo apt-get update -qq"
            f" && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {PYTHON} {PYTHON}-venv; fi",
            f'mkdir -p "{root}"',
            f'rm -f "{root}/revision"',
            f'rm -rf "{root}/src.new"',
            f'mkdir "{root}/src.new"',
            f'tar -xzf "$HOME/{REMOTE_TARBALL}" -C "{root}/src.new"',
            f'rm -rf "{root}/src"',
            f'mv "{root}/src.new" "{root}/src"',
            f'[ -x "{root}/venv/bin/python" ] || {PYTHON} -m venv "{root}/venv"',
            f'"{root}/venv/bin/pip" install -q --upgrade pip',
            f'"{root}/venv/bin/pip" install -q -e "{root}/src[video]" {packages}',
            f'echo {rev} > "{root}/revision"',
            f'echo "$(hostname): set up {revision}"',
        ]
    )


def plan_setup(target: Target, source: Source, state: State) -> Plan:
    if state.installed:
        return Plan([], [f"every worker of {target.name} already has {source.revision}: nothing to set up"])
    notes = ["uncommitted changes are not shipped: commit them, or pass --source=worktree"] * source.uncommitted
    if source.worktree:
        pack = [sys.executable, str(Path(__file__).resolve()), "pack-worktree", source.tarball]
    else:
        pack = ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={source.tarball}", "HEAD"]
    copy = target.gcloud("tpu-vm", "scp", source.tarball, f"{target.name}:{REMOTE_TARBALL}", "--worker=all")
    return Plan([pack, copy, target.ssh(setup_script(source.revision))], notes)


def check_train_job(job: TrainJob, accelerator: Accelerator, repo: Path = REPO) -> list[str]:
    """Raises LaunchError for a job that cannot work; returns warnings for one that works but may surprise."""
    config_file = job.config.split(":", 1)[0]
    if os.path.isabs(config_file) or not (repo / config_file).is_file():
        raise LaunchError(f"--config {job.config!r}: give a config file inside the repository, e.g. configs/tiny.py")
    for item in job.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", item):
            raise LaunchError(f"--env {item!r}: write it as NAME=VALUE")
    if job.workdir.startswith("gs://"):
        return []
    if "://" in job.workdir:
        raise LaunchError(f"--workdir {job.workdir!r}: use a gs://bucket/path workdir (or a local path on one host)")
    if accelerator.workers > 1:
        raise LaunchError(
            f"--workdir {job.workdir!r} is local, but {accelerator.name} has {accelerator.workers} workers that "
            "must share one workdir: use --workdir=gs://BUCKET/PATH"
        )
    return [
        f"--workdir {job.workdir!r} is on the TPU VM's own disk (relative to {REMOTE_ROOT}/src) and is lost "
        "when the VM is deleted; prefer --workdir=gs://BUCKET/PATH"
    ]


def train_script(job: TrainJob, restart: bool) -> str:
    """Runs on every worker: refuse (or stop, with --restart) a running copy, then start pyoco-train detached."""
    root = REMOTE_ROOT
    args = shlex.join([f"--config={job.config}", f"--workdir={job.workdir}", *job.overrides])
    command = f'"{root}/venv/bin/pyoco-train" {args}'
    if job.env:
        command = f"env {shlex.join(job.env)} {command}"
    if restart:
        on_running = (
            'echo "$(hostname): stopping pid $pid (SIGTERM: it saves a checkpoint first)"; kill -TERM "$pid";'
            f' for _ in $(seq {STOP_TIMEOUT_S}); do alive "$pid" || break; sleep 1; done;'
            ' if alive "$pid"; then kill -KILL "$pid"; fi'
        )
    else:
        on_running = 'echo "$(hostname): pyoco-train already runs (pid $pid); use --restart to replace it" >&2; exit 1'
    return "; ".join(
        [
            "set -euo pipefail",
            TRAINING,
            f'if [ ! -s "{root}/revision" ];'
            ' then echo "$(hostname): not set up; run launch/tpu.py setup first" >&2; exit 1; fi',
            f"if training; then {on_running}; fi",
            f'cd "{root}/src"',
            f'echo "=== $(date -u +%FT%TZ) code $(cat "{root}/revision") ===" >> "{root}/train.log"',
            f'{{ setsid nohup {command} >> "{root}/train.log" 2>&1 < /dev/null & }}',
            f'echo $! > "{root}/train.pid"',
            f'echo "$(hostname): started pid $!, log {root}/train.log"',
        ]
    )


def plan_train(
    target: Target, accelerator: Accelerator, job: TrainJob, state: State, *, restart: bool = False, repo: Path = REPO
) -> Plan:
    notes = check_train_job(job, accelerator, repo)
    if state.running and not restart:
        raise LaunchError(
            f"pyoco-train already runs on {target.name}: follow it with `logs`, check `status`, or pass --restart "
            "to stop it (it saves a checkpoint first) and start again"
        )
    return Plan([target.ssh(train_script(job, restart))], notes)


def plan_logs(target: Target, worker: int, lines: int = 100) -> Plan:
    return Plan([target.ssh(f'tail -n {lines} -F "{REMOTE_ROOT}/train.log"', worker=str(worker))])


def status_script() -> str:
    root = REMOTE_ROOT
    return "; ".join(
        [
            TRAINING,
            'if training; then state="training (pid $pid)"; else state=idle; fi',
            f'echo "$(hostname): $state, code $(cat "{root}/revision" 2>/dev/null || echo none)"',
            f'tail -n 1 "{root}/train.log" 2>/dev/null || true',
        ]
    )


def plan_status(target: Target, state: State) -> Plan:
    if not state.exists:
        return Plan([], [f"no TPU named {target.name} in {target.zone} (project {target.project})"])
    commands = [target.describe()]
    if not target.queued:  # A queued resource's node may not exist yet; its describe shows the queue state.
        commands.append(target.ssh(status_script()))
    return Plan(commands)


def plan_delete(target: Target, state: State) -> Plan:
    if not state.exists:
        return Plan([], [f"no TPU named {target.name} in {target.zone}: nothing to delete"])
    if target.queued:  # --force also deletes the TPU VM the queued resource made.
        return Plan([target.gcloud("queued-resources", "delete", target.name, "--force", "--quiet")])
    return Plan([target.gcloud("tpu-vm", "delete", target.name, "--quiet")])


# ---- Local helpers: the code revision and the working-tree tarball. ----


def _git(*args: str, repo: Path = REPO) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise LaunchError(f"git {' '.join(args)} failed in {repo}: is it a git checkout? ({err})") from err


def worktree_files(repo: Path = REPO) -> list[str]:
    """Tracked and untracked files that git does not ignore (what `--source=worktree` ships)."""
    names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", repo=repo).decode().split("\0")
    return sorted({name for name in names if name and (repo / name).is_file()})


def current_source(worktree: bool, repo: Path = REPO) -> Source:
    head = _git("rev-parse", "HEAD", repo=repo).decode().strip()
    if not worktree:
        return Source(head, uncommitted=bool(_git("status", "--porcelain", "--untracked-files=no", repo=repo).strip()))
    digest = hashlib.sha256()
    for name in worktree_files(repo):
        digest.update(name.encode() + b"\0" + (repo / name).read_bytes() + b"\0")
    return Source(f"{head[:12]}-worktree-{digest.hexdigest()[:12]}", worktree=True)


def pack_worktree(out: str, repo: Path = REPO) -> None:
    with tarfile.open(out, "w:gz") as tar:
        for name in worktree_files(repo):
            tar.add(repo / name, arcname=name)


# ---- The thin runner. ----


def _exists(target: Target) -> bool:
    result = subprocess.run(exists_check(target), capture_output=True, text=True)
    if result.returncode == 0:
        return True
    if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
        return False
    raise LaunchError(f"could not describe {target.name}:\n{result.stderr.strip()}")


def _remote_yes(command: list[str]) -> bool:
    """A remote check's answer: exit BUSY on some worker means yes, 0 everywhere means no."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode not in (0, BUSY):
        raise LaunchError(f"could not reach the workers (exit {result.returncode}):\n{result.stderr.strip()}")
    return result.returncode == BUSY


def observe(args: argparse.Namespace, target: Target, source: Source | None) -> State:
    if args.command in ("create", "status", "delete"):
        return State(exists=_exists(target))
    if args.command == "setup":
        return State(installed=not _remote_yes(outdated_check(target, source)))
    if args.command == "train":
        return State(running=_remote_yes(running_check(target)))
    return State()


def make_plan(args: argparse.Namespace, target: Target, source: Source | None, state: State) -> Plan:
    if args.command == "create":
        return plan_create(
            target,
            parse_accelerator(args.accelerator_type),
            state,
            runtime_version=args.runtime_version,
            spot=args.spot,
            reserved=args.reserved,
        )
    if args.command == "setup":
        return plan_setup(target, source, state)
    if args.command == "train":
        job = TrainJob(args.config, args.workdir, tuple(args.overrides), tuple(args.env))
        return plan_train(target, parse_accelerator(args.accelerator_type), job, state, restart=args.restart)
    if args.command == "logs":
        return plan_logs(target, args.worker)
    if args.command == "status":
        return plan_status(target, state)
    return plan_delete(target, state)


def checks_for(args: argparse.Namespace, target: Target, source: Source | None) -> list[list[str]]:
    """The checks `observe` runs, as commands (a dry run prints them)."""
    if args.command == "setup":
        return [outdated_check(target, source)]
    if args.command == "train":
        return [running_check(target)]
    return [exists_check(target)] if args.command in ("create", "status", "delete") else []


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--name", required=True, help="TPU VM name (and queued resource name with --queued).")
    common.add_argument("--zone", help="Zone, e.g. us-east5-a (default: $CLOUDSDK_COMPUTE_ZONE).")
    common.add_argument("--project", help="Project id (default: $CLOUDSDK_CORE_PROJECT).")
    common.add_argument("--queued", action="store_true", help="The TPU is (or is to be) a queued resource.")
    common.add_argument("--dry-run", action="store_true", help="Print the commands instead of running them.")
    parser = argparse.ArgumentParser(prog="launch/tpu.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", parents=[common], help="Create the TPU VM (or queued resource).")
    create.add_argument("--accelerator-type", required=True, help="e.g. v6e-8, v5p-32, v5litepod-16, v4-8.")
    create.add_argument(
        "--runtime-version",
        help="Default per family: "
        + ", ".join(f"{name}: {family.runtime_version}" for name, family in FAMILIES.items()),
    )
    tier = create.add_mutually_exclusive_group()
    tier.add_argument("--spot", action="store_true", help="Spot capacity (may be preempted).")
    tier.add_argument("--reserved", action="store_true", help="Reserved capacity.")
    setup = sub.add_parser("setup", parents=[common], help="Copy the code to every worker and install it.")
    setup.add_argument(
        "--source",
        choices=("head", "worktree"),
        default="head",
        help="head: the committed HEAD (git archive); worktree: files as they are, uncommitted too.",
    )
    train = sub.add_parser("train", parents=[common], help="Start pyoco-train on every worker, detached.")
    train.add_argument("--accelerator-type", required=True, help="The TPU's type (sets how many workers share it).")
    train.add_argument("--config", required=True, help="Config file inside the repository, e.g. configs/tiny.py.")
    train.add_argument("--workdir", required=True, help="gs://BUCKET/PATH (a local path only on one host).")
    train.add_argument("--env", action="append", default=[], help="NAME=VALUE for pyoco-train's environment.")
    train.add_argument("--restart", action="store_true", help="Stop a running pyoco-train (SIGTERM) and start again.")
    logs = sub.add_parser("logs", parents=[common], help="Follow a worker's training log.")
    logs.add_argument("--worker", type=int, default=0, help="Worker index (default 0).")
    sub.add_parser("status", parents=[common], help="TPU state, and per worker: training or idle, code revision.")
    sub.add_parser("delete", parents=[common], help="Delete the TPU VM (or queued resource and its VM).")
    pack = sub.add_parser("pack-worktree", help=argparse.SUPPRESS)
    pack.add_argument("out")
    args, extra = parser.parse_known_args(argv)
    args.overrides = [item for item in extra if args.command == "train" and re.match(r"--config\.[\w.]+=", item)]
    unknown = [item for item in extra if item not in args.overrides]
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (config overrides go to `train`, written as "
            "--config.key=value)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "pack-worktree":
        pack_worktree(args.out)
        return 0
    try:
        target = resolve_target(args.name, args.zone, args.project, args.queued, os.environ)
        source = current_source(args.source == "worktree") if args.command == "setup" else None
        if args.dry_run:
            for command in checks_for(args, target, source):
                print("# checked first:", shlex.join(command))
            # A dry run shows the step doing its work: nothing made or running yet, the TPU there to inspect or delete.
            plan = make_plan(args, target, source, State(exists=args.command in ("status", "delete")))
        else:
            plan = make_plan(args, target, source, observe(args, target, source))
    except LaunchError as err:
        print(f"launch/tpu.py {args.command}: error: {err}", file=sys.stderr)
        return 2
    for note in plan.notes:
        print(f"launch/tpu.py {args.command}: {note}", file=sys.stderr)
    for command in plan.commands:
        if args.dry_run:
            print(shlex.join(command))
            continue
        print("+", shlex.join(command), file=sys.stderr, flush=True)
        returncode = subprocess.run(command).returncode
        if returncode:
            print(
                f"launch/tpu.py {args.command}: failed (exit {returncode}); fix the cause and rerun the same "
                "command: finished steps are skipped",
                file=sys.stderr,
            )
            return returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
