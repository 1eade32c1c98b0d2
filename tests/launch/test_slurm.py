"""launch/slurm.py, launch/slurm.sbatch and launch/local.sh: the commands they build and the mistakes they catch.

The batch script runs for real under bash with an `srun` stand-in on PATH that records what it was asked
to start (SLURM itself is not here); local.sh is checked through its --dry-run.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.launch.launchers import REPO, load

slurm = load("slurm")


def test_dry_run_for_4_nodes_of_8_gpus(capsys):
    override = "--config.model.block_out_channels=(64, 128)"
    args = ["--nodes", "4", "--gpus-per-node", "8", "--partition", "h100", "--time", "24:00:00", "--dry-run"]
    assert slurm.main([*args, "--config", "configs/tiny.py", "--workdir", "gs://bucket/runs/gpu", override]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert shlex.split(line) == [
        "sbatch",
        "--job-name=pyoco-tiny",
        "--nodes=4",
        "--gpus-per-node=8",
        "--ntasks-per-node=8",  # One JAX process per GPU.
        "--time=24:00:00",
        "--partition=h100",
        f"--output={REPO}/runs/slurm/%x-%j.out",
        f"--export=ALL,PYOCO_REPO={REPO},PYOCO_VENV={REPO}/.venv",
        f"{REPO}/launch/slurm.sbatch",
        "configs/tiny.py",
        "gs://bucket/runs/gpu",
        override,
    ]


def test_local_workdir_becomes_absolute_and_env_is_exported(tmp_path):
    job = slurm.Job(nodes=1, gpus_per_node=2, config="configs/tiny.py", workdir="runs/x", env=("XLA_FLAGS=--a=1",))
    command = slurm.sbatch_command(job, cwd=tmp_path)
    assert str(tmp_path / "runs" / "x") in command
    assert f"--export=ALL,PYOCO_REPO={REPO},PYOCO_VENV={REPO}/.venv,XLA_FLAGS=--a=1" in command


@pytest.mark.parametrize(
    "value, seconds",
    [("30", 1800), ("45:30", 2730), ("24:00:00", 86400), ("1-12", 129600), ("2-00:30", 174600),
     ("1-02:03:04", 93784)],
)  # fmt: skip
def test_time_limit_forms(value, seconds):
    assert slurm.time_limit_seconds(value) == seconds


@pytest.mark.parametrize(
    "change, message",
    [({"nodes": 0}, "--nodes 0: ask for at least one node"),
     ({"gpus_per_node": 0}, "--gpus-per-node 0: must be 1..16"),
     ({"gpus_per_node": 17}, "--gpus-per-node 17: must be 1..16"),
     ({"time": "24h"}, "--time '24h': write it as HH:MM:SS"),
     ({"time": "1:75:00"}, "minutes and seconds < 60"),
     ({"time": "1-24:00"}, "hours (after D-) must be < 24"),
     ({"time": "0"}, "must be positive"),
     ({"config": "configs/nope.py"}, "no such config file"),
     ({"workdir": "s3://bucket/run"}, "gs://BUCKET/PATH"),
     ({"env": ("A=1,2",)}, "no commas"),
     ({"overrides": ("--config.x",)}, "--config.key=value")],
)  # fmt: skip
def test_mistakes_are_caught_before_submitting(change, message):
    job = slurm.Job(**{"nodes": 4, "gpus_per_node": 8, "config": "configs/tiny.py", "workdir": "/shared/w", **change})
    with pytest.raises(slurm.LaunchError) as err:
        slurm.sbatch_command(job)
    assert message in str(err.value)


def test_batch_script_starts_one_srun_of_pyoco_train(tmp_path):
    bin_dir, venv_bin = tmp_path / "bin", tmp_path / "venv" / "bin"
    bin_dir.mkdir()
    venv_bin.mkdir(parents=True)
    (venv_bin / "pyoco-train").write_text("#!/bin/sh\n")
    (venv_bin / "pyoco-train").chmod(0o755)
    record = "import json, os, sys; print(json.dumps([os.getcwd(), *sys.argv[1:]]))"
    (bin_dir / "srun").write_text(f"#!{sys.executable}\n{record}\n")
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYOCO_REPO": str(REPO), "PYOCO_VENV": str(tmp_path / "venv")}
    command = ["bash", str(REPO / "launch" / "slurm.sbatch"), "configs/tiny.py", "/shared/w", "--config.a=(1, 2)"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [
        str(REPO),
        "--kill-on-bad-exit=1",
        "--gpu-bind=none",  # Each task sees its node's GPUs; JAX picks GPU number SLURM_LOCALID.
        "--label",
        str(venv_bin / "pyoco-train"),
        "--config",
        "configs/tiny.py",
        "--workdir",
        "/shared/w",
        "--config.a=(1, 2)",
    ]
    del env["PYOCO_REPO"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "PYOCO_REPO" in result.stderr


def test_local_launcher_dry_run(tmp_path):
    script = str(REPO / "launch" / "local.sh")
    override = "--config.model.block_out_channels=(8, 16)"
    result = subprocess.run(["bash", script, "--dry-run", "configs/tiny.py", str(tmp_path / "w"), override],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    mkdir, train = result.stdout.splitlines()[-2:]
    assert shlex.split(mkdir) == ["mkdir", "-p", str(tmp_path / "w")]
    pipeline = shlex.split(train)
    assert pipeline[1:6] == ["--config", "configs/tiny.py", "--workdir", str(tmp_path / "w"), override]
    assert pipeline[-3:] == ["tee", "-a", str(tmp_path / "w" / "train.log")]
    assert not (tmp_path / "w").exists()  # Nothing ran.
    gcs = subprocess.run(["bash", script, "--dry-run", "configs/tiny.py", "gs://bucket/run"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shlex.split(gcs.stdout.splitlines()[-1])[-1] == f"{REPO}/runs/logs/run.log"
