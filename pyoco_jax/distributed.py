"""Starting JAX on several hosts, and checking that every host runs the same job.

`initialize` picks the cluster from the environment: explicit coordinator flags,
Cloud TPU (TPU chips on the PCI bus or the TPU runtime's variables; JAX then reads
the pod's layout from the metadata server), or SLURM (JAX's detector when `srun` set its step
variables, else the first host of `SLURM_NODELIST`). CPU processes talk over
gloo. `check_processes_agree` compares a fingerprint of the resolved config and
the code across processes, so a host with a stale checkout or another override
fails at once with the differences named, instead of hanging or diverging.
"""

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from pyoco_jax.errors import UserError
from pyoco_jax.platforms import tpu_chips_present

_TPU_VARIABLES = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")
_SLURM_STEP_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_MAX_REPORTED = 12


class ProcessMismatchError(UserError):
    """The processes of one run disagree on the config or the code."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How `jax.distributed.initialize` is called; all None means single-process (or auto-detected TPU)."""

    source: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    detection: str | None = None


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist: 'gpu[003-005,9]-ib,cpu1' -> 'gpu003-ib'."""
    depth = 0
    for index, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            nodelist = nodelist[:index]
            break
    if "[" not in nodelist:
        return nodelist.strip()
    prefix, rest = nodelist.split("[", 1)
    ranges, suffix = rest.split("]", 1)
    return f"{prefix.strip()}{re.split(r'[,-]', ranges, maxsplit=1)[0]}{suffix.strip()}"


def detect_cluster(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: dict | None = None,
    tpu_chips: bool | None = None,
) -> Cluster | None:
    """The cluster to join, or None for a plain single-process run.

    Explicit arguments win (all three are needed together); then Cloud TPU (`tpu_chips`
    defaults to looking at this host's PCI devices), then SLURM with more than one task.
    """
    env = os.environ if environ is None else environ
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise UserError(
                "--coordinator, --num_processes and --process_id go together: pass all three "
                f"(got coordinator={coordinator!r}, num_processes={num_processes}, process_id={process_id})"
            )
        if not 0 <= process_id < num_processes:
            raise UserError(f"--process_id={process_id} must be in 0..{num_processes - 1} (--num_processes)")
        return Cluster("flags", coordinator, num_processes, process_id)
    if tpu_chips is None:
        tpu_chips = tpu_chips_present()
    if tpu_chips or any(name in env for name in _TPU_VARIABLES):
        return Cluster("Cloud TPU")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        if all(name in env for name in _SLURM_STEP_VARIABLES):
            return Cluster("SLURM", detection="slurm")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise UserError("SLURM_NTASKS > 1 but no SLURM_NODELIST: launch with srun, or pass --coordinator")
        port = env.get("JAX_COORDINATOR_PORT") or str(int(env.get("SLURM_JOB_ID", "0")) % 4096 + 61440)
        address = f"{first_slurm_host(nodelist)}:{port}"
        return Cluster("SLURM", address, int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"]))
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> str:
    """Joins the cluster found by `detect_cluster` (once, before any device is used); returns a log line."""
    if jax.distributed.is_initialized():
        return f"process {jax.process_index()} of {jax.process_count()} (already initialised)"
    cluster = detect_cluster(coordinator, num_processes, process_id)
    if cluster is None:
        return "single process"
    # CPU devices of different processes exchange data over gloo; accelerators ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"cluster_detection_method": cluster.detection} if cluster.detection else {}
    jax.distributed.initialize(cluster.coordinator, cluster.num_processes, cluster.process_id, **kwargs)
    return f"process {jax.process_index()} of {jax.process_count()} ({cluster.source})"


@functools.cache
def _code_identity() -> dict[str, str]:
    package = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    try:
        version = importlib.metadata.version("pyoco_jax")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (no git)"
    return {"code: pyoco_jax version": version, "code: git commit": commit, "code: source digest": digest.hexdigest()}


def fingerprint(config: ml_collections.ConfigDict) -> dict[str, str]:
    """Everything that must agree across processes: every resolved config value, the version and the code."""
    flat: dict[str, str] = {}

    def visit(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[f"config: {prefix}"] = json.dumps(node)

    visit("", json.loads(config.to_json()))
    return {**flat, **_code_identity()}


def differences(fingerprints: list[dict[str, str]]) -> list[str]:
    """One line per key on which some process differs from process 0."""
    lines = []
    for key in sorted(set().union(*fingerprints)):
        values = [f.get(key, "<missing>") for f in fingerprints]
        if any(v != values[0] for v in values):
            shown = ", ".join(f"process {i} has {v}" for i, v in enumerate(values) if i == 0 or v != values[0])
            lines.append(f"{key}: {shown}")
    return lines


def check_processes_agree(config: ml_collections.ConfigDict) -> None:
    """Raises ProcessMismatchError on every process if any process's fingerprint differs."""
    if jax.process_count() == 1:
        return
    blob = np.frombuffer(json.dumps(fingerprint(config), sort_keys=True).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([blob.size], np.int32)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: blob.size] = blob
    gathered = multihost_utils.process_allgather(padded)
    everyone = [json.loads(row[:n].tobytes()) for row, n in zip(gathered, lengths, strict=True)]
    lines = differences(everyone)
    if lines:
        more = f"\n  ... and {len(lines) - _MAX_REPORTED} more" if len(lines) > _MAX_REPORTED else ""
        raise ProcessMismatchError(
            "the processes of this run disagree; start every process with the same config, overrides and code:\n  "
            + "\n  ".join(lines[:_MAX_REPORTED])
            + more
        )
    logging.info("All %d processes run the same config and code.", jax.process_count())
