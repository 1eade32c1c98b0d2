"""launch/sweep.py: configs checked before any run starts, launcher commands per run, the summary table, and a
two-run sweep trained here end to end (then skipped on a rerun)."""

import csv
import json
import math
import shlex
import subprocess
import sys

import numpy as np
import pytest

from pyoco_jax.config import ConfigError
from pyoco_jax.sweep import load_sweep
from tests.launch.launchers import REPO, load
from tests.train.helpers import FAST, single_device_env

sweep_cli = load("sweep")
tpu = load("tpu")
slurm = load("slurm")
TPU_ARGS = ["--name=pyoco-{index}", "--accelerator-type=v6e-8", "--zone=us-east5-a", "--project=my-project"]


def write_sweep(tmp_path, runs: str) -> str:
    path = tmp_path / "sweep_def.py"
    path.write_text(f'"""A test sweep."""\nCONFIG = "configs/tiny.py"\n\n\ndef get_sweep():\n    return {runs}\n')
    return str(path)


@pytest.mark.parametrize(
    "runs, message",
    [
        ('[{"noise.prior": "mixed"}, {"noise.prior": "bogus"}]', r"run prior-bogus: config key 'noise.prior'"),
        ('[{"noise.alpha": 1.0}, {"noise.alpah": 1.0}]', r"run alpah-1.0: unknown config key 'noise.alpah'"),
        ('[{"noise.alpha": 1.0}, {"noise.alpha": -1.0}]', r"run alpha--1.0: config key 'noise.alpha': must be >= 0"),
    ],
)
def test_a_bad_run_stops_the_sweep_before_anything_starts(tmp_path, capsys, runs, message):
    path, workdir = write_sweep(tmp_path, runs), tmp_path / "runs"
    with pytest.raises(ConfigError, match=message):
        sweep_cli.expand(load_sweep(path), str(workdir))
    assert sweep_cli.main([path, "--workdir", str(workdir)]) == 2
    assert "launch/sweep.py: error: run " in capsys.readouterr().err
    assert not workdir.exists()  # Not even the first, valid run was started.


@pytest.mark.parametrize(
    "runs, args, message",
    [
        ('[{"noise.alpha": 1.0}]', ["--config.noise.alpha=3.0"], "noise.alpha is swept by this sweep"),
        ('[{"noise.alpha": 1.0}]', ["--config.train.num_steps"], "is not key=value"),
        ('[{"noise.alpha": 1.0}]', ["--only", "alpha-2.0"], "--only alpha-2.0: no such run; the runs are: alpha-1.0"),
        ('[{"noise.alpha": 1.0}, {"seed": 0}]', [], "runs alpha-1.0 and seed-0 have the same config"),  # tiny's values
        ('[{"noise.alpha": 1.0}, {"noise.alpha": 2.0}]', ["--launcher", "tpu", "--", "--name=pyoco"], "own TPU VM"),
        ('[{"noise.alpha": 1.0}]', ["--launcher", "tpu", "--", *TPU_ARGS[:1]], "--accelerator-type"),
        ('[{"noise.alpha": 1.0}]', ["--launcher", "slurm", "--", "--nodes=0", "--gpus-per-node=1"], "--nodes 0"),
        ('[{"noise.alpha": 1.0}]', ["--", "--nodes=1"], "go to --launcher tpu or slurm"),
    ],
)
def test_mistakes_are_refused_with_what_to_change(tmp_path, capsys, runs, args, message):
    workdir = tmp_path / "runs"
    assert sweep_cli.main([write_sweep(tmp_path, runs), "--workdir", str(workdir), "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err
    assert not workdir.exists()


def test_tpu_dry_run_prints_one_train_command_per_run_that_the_launcher_accepts(tmp_path, capsys):
    path = str(REPO / "configs" / "sweeps" / "noise_prior.py")
    args = [path, "--workdir", "gs://bucket/sweeps/np", "--launcher", "tpu", "--dry-run"]
    assert sweep_cli.main([*args, "--only", "prior-iid", "prior-progressive_alpha-4.0", "--", *TPU_ARGS]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert [command[:3] for command in commands] == [[sys.executable, str(REPO / "launch" / "tpu.py"), "train"]] * 2
    parsed = [tpu.parse_args(command[2:]) for command in commands]  # The launcher's own parser reads them.
    assert [p.name for p in parsed] == ["pyoco-0", "pyoco-8"]  # {index}: the run's place in the whole sweep.
    assert [p.workdir for p in parsed] == [
        "gs://bucket/sweeps/np/prior-iid",
        "gs://bucket/sweeps/np/prior-progressive_alpha-4.0",
    ]
    assert {p.config for p in parsed} == {"configs/tiny.py"}
    assert parsed[0].overrides == ["--config.noise.prior=iid"]
    assert parsed[1].overrides == ["--config.noise.prior=progressive", "--config.noise.alpha=4.0"]
    for command in commands:  # Handed over as printed, the launcher plans the train step without complaint.
        assert tpu.main([*command[2:], "--dry-run"]) == 0
    assert all("pyoco-train" in line for line in capsys.readouterr().out.splitlines() if not line.startswith("#"))


def test_slurm_dry_run_prints_one_sbatch_submission_per_run(tmp_path, capsys):
    path = write_sweep(tmp_path, '[{"noise.alpha": 0.5}, {"noise.alpha": 1.0}, {"noise.alpha": 2.5}]')
    extra = ["--", "--nodes=2", "--gpus-per-node=8", "--time=04:00:00"]
    assert (
        sweep_cli.main([path, "--workdir", "/shared/sw", "--launcher", "slurm", "--dry-run", "--config.seed=3", *extra])
        == 0
    )
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 3
    for command, alpha in zip(commands, ("0.5", "1.0", "2.5"), strict=True):
        _, job = slurm.parse_args(command[2:])
        assert (job.nodes, job.gpus_per_node, job.time, job.config) == (2, 8, "04:00:00", "configs/tiny.py")
        assert job.job_name == f"sweep_def-alpha-{alpha}" and job.workdir == f"/shared/sw/alpha-{alpha}"
        assert job.overrides == (f"--config.noise.alpha={alpha}", "--config.seed=3")
        sbatch = slurm.sbatch_command(job)
        tail = [f"{REPO}/launch/slurm.sbatch", "configs/tiny.py", f"/shared/sw/alpha-{alpha}", *job.overrides]
        assert sbatch[0] == "sbatch" and sbatch[-5:] == tail


def _records(steps, losses, **extra):
    return [{"step": s, "loss": loss, "steps_per_second": 2.0 * s, "frames_per_second": 64.0 * s, **extra}
            for s, loss in zip(steps, losses, strict=True)]  # fmt: skip


def test_summary_of_runs_in_every_state(tmp_path):
    path = write_sweep(tmp_path, '[{"noise.alpha": a} for a in (0.5, 1.0, 2.0, 4.0)] + [{"noise.prior": "iid"}]')
    workdir = tmp_path / "sw"
    sweep = load_sweep(path)
    runs = {run.name: run for run in sweep_cli.expand(sweep, str(workdir), ["train.num_steps=6"])}
    done, failed, running, not_started, nan = (workdir / name for name in runs)

    # done: resumed from step 4 after reaching 5, so steps 5 is logged twice and the later line wins; an evaluation.
    first = _records([1, 2, 3, 4, 5], [1.0, 0.9, 0.7, 0.8, 0.75])
    resumed = _records([5, 6], [0.6, 0.65], **{"eval/fvd": 300.0, "eval/split": "test"})  # Only numbers are kept.
    done.mkdir(parents=True)
    lines = [json.dumps(r) for r in first + resumed] + ['{"step": 7, "lo']  # A line cut short by a kill.
    (done / "metrics.jsonl").write_text("\n".join(lines))
    (done / "checkpoints" / "6").mkdir(parents=True)
    failed.mkdir()
    (failed / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in _records([1, 2], [1.2, 1.1])))
    (failed / "exit_code").write_text("1\n")
    (running / "checkpoints" / "2").mkdir(parents=True)
    (running / "checkpoints" / "6.orbax-checkpoint-tmp-1").mkdir()  # The final save is not committed yet.
    (running / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in _records([1, 2, 3], [1.0, 0.5, 0.4])))
    nan.mkdir()
    (nan / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in _records([1, 2, 3], [1.0, 0.5, float("nan")])))
    (nan / "exit_code").write_text("1\n")

    sweep_cli.write_summary(sweep, list(runs.values()), str(workdir))
    with open(workdir / "summary.csv") as file:
        rows = {row["name"]: row for row in csv.DictReader(file)}
    assert [rows[n]["status"] for n in runs] == ["done", "failed", "running", "not started", "failed"]
    assert [rows[n]["noise.alpha"] for n in runs] == ["0.5", "1.0", "2.0", "4.0", ""]
    assert [rows[n]["noise.prior"] for n in runs] == ["", "", "", "", "iid"]
    losses = [1.0, 0.9, 0.7, 0.8, 0.6, 0.65]  # Step 5 from the resumed run.
    row = rows["alpha-0.5"]
    assert int(row["final_step"]) == 6 and float(row["final_loss"]) == 0.65
    assert float(row["mean_loss_last_5"]) == pytest.approx(np.mean(losses[-5:]), rel=1e-12)
    assert float(row["best_loss"]) == 0.6
    assert float(row["steps_per_second"]) == pytest.approx(np.median(2.0 * np.arange(1, 7)), rel=1e-12)
    assert float(row["frames_per_second"]) == pytest.approx(np.median(64.0 * np.arange(1, 7)), rel=1e-12)
    assert float(row["eval/fvd"]) == 300.0 and rows["alpha-1.0"]["eval/fvd"] == "" and "eval/split" not in row
    assert rows["alpha-4.0"]["final_loss"] == "" and rows["alpha-4.0"]["final_step"] == ""
    nan_row = rows["prior-iid"]  # A diverged run: its last loss is NaN, the best is the lowest finite one.
    assert math.isnan(float(nan_row["final_loss"])) and float(nan_row["best_loss"]) == 0.5

    table = (workdir / "summary.md").read_text().splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("| name |"))
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[header:]]
    assert len(cells) == 2 + len(runs) and len({len(c) for c in cells}) == 1  # One row per run, all as wide.
    assert "5 runs: 1 done, 1 running, 2 failed, 1 not started" in "\n".join(table)
    assert cells[2][0] == "alpha-0.5" and "0.65" in cells[2] and "300" in cells[2]


@pytest.mark.slow
def test_a_run_that_fails_is_recorded_as_failed(tmp_path):
    # A valid config, but pyoco-train makes at most 4 CPU devices for tiny's batch of 4: no 5-way data parallelism.
    path, workdir = write_sweep(tmp_path, '[{"mesh.data": 5}]'), tmp_path / "sw"
    command = [sys.executable, str(REPO / "launch" / "sweep.py"), path, "--workdir", str(workdir)]
    result = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "data-5: failed (exit 1; see its train.log)" in result.stdout
    assert (workdir / "data-5" / "exit_code").read_text() == "1\n"
    log = (workdir / "data-5" / "train.log").read_text()
    assert "needs 5 devices" in log and "available" in log  # The mesh error names what is missing.
    with open(workdir / "summary.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["failed"]


@pytest.mark.slow
def test_summary_ranks_runs_by_their_newest_evaluation(tmp_path):
    path = write_sweep(tmp_path, '[{"noise.alpha": a} for a in (0.5, 1.0, 2.0)]')
    workdir = tmp_path / "sw"
    sweep = load_sweep(path)
    runs = sweep_cli.expand(sweep, str(workdir), [])
    evaluations = {  # run -> {step: (fvd, shape accuracy)} as pyoco-eval writes them; alpha-2.0 never evaluated.
        "alpha-0.5": {100: (900.0, 0.4), 200: (300.0, 0.7)},  # The newest step counts: 300.
        "alpha-1.0": {200: (450.0, 0.8)},
    }
    for name, by_step in evaluations.items():
        (workdir / name / "eval").mkdir(parents=True)
        for step, (fvd, accuracy) in by_step.items():
            record = {"step": step, "eval/fvd": fvd, "eval/shape_accuracy": accuracy, "protocol": "fvd256_8f"}
            (workdir / name / "eval" / f"step_{step:07d}.json").write_text(json.dumps(record))
    rows = sweep_cli.write_summary(sweep, runs, str(workdir), rank_by="eval/fvd")
    assert [(row["name"], row["rank"], row.get("eval/fvd")) for row in rows] == [
        ("alpha-0.5", 1, 300.0),
        ("alpha-1.0", 2, 450.0),
        ("alpha-2.0", None, None),
    ]
    assert "Ranked by eval/fvd (lowest first)" in (workdir / "summary.md").read_text()
    rows = sweep_cli.write_summary(sweep, runs, str(workdir), rank_by="-eval/shape_accuracy")
    assert [row["name"] for row in rows] == ["alpha-1.0", "alpha-0.5", "alpha-2.0"]
    with open(workdir / "summary.csv") as file:
        assert next(csv.reader(file))[0] == "rank"


def test_two_run_sweep_trains_here_summarizes_and_skips_finished_runs_on_rerun(tmp_path):
    # The runs differ only in their data, so both use the same compiled programs (the second hits the cache).
    path = write_sweep(tmp_path, '[{"data.max_objects": n} for n in (1, 2, 3)]')
    workdir = tmp_path / "sw"
    overrides = [*FAST, "train.num_steps=4", "train.checkpoint_every=4", "train.log_every=1"]
    command = [sys.executable, str(REPO / "launch" / "sweep.py"), path, "--workdir", str(workdir)]
    command += ["--only", "max_objects-1", "max_objects-2", *(f"--config.{item}" for item in overrides)]
    first = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr[-5000:]

    names = ["max_objects-1", "max_objects-2"]
    for name in names:
        assert (workdir / name / "checkpoints" / "4" / "state").is_dir()
    with open(workdir / "summary.csv") as file:
        rows = {row["name"]: row for row in csv.DictReader(file)}
    assert [rows[n]["status"] for n in [*names, "max_objects-3"]] == ["done", "done", "not started"]
    for name in names:
        logged = [json.loads(line) for line in (workdir / name / "metrics.jsonl").read_text().splitlines()]
        losses = [record["loss"] for record in logged]
        assert [record["step"] for record in logged] == [1, 2, 3, 4] and all(map(math.isfinite, losses))
        row = rows[name]
        assert int(row["final_step"]) == 4 and float(row["final_loss"]) == losses[-1]
        assert float(row["mean_loss_last_5"]) == pytest.approx(np.mean(losses), rel=1e-12)
        assert float(row["best_loss"]) == min(losses) and float(row["steps_per_second"]) > 0
    summary = (workdir / "summary.md").read_text()
    assert "3 runs: 2 done, 0 running, 0 failed, 1 not started" in summary
    print(summary)  # The table, for the record (pytest -s).

    logs = {name: (workdir / name / "train.log").read_bytes() for name in names}
    again = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr[-5000:]
    assert again.stdout.count("done, skipped") == 2
    assert {name: (workdir / name / "train.log").read_bytes() for name in names} == logs  # Nothing ran again.
    assert sorted(p.name for p in (workdir / names[0] / "checkpoints").iterdir()) == ["4"]
