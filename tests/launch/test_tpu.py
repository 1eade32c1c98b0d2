"""launch/tpu.py: accelerator types, dry-run command sequences, argument errors, and the skip/refuse logic.

The remote scripts are also run for real with bash in a scratch $HOME, with a stand-in pyoco-train that
records its arguments and sleeps, so "already running", --restart and "already set up" are exercised.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from tests.launch.launchers import REPO, load

tpu = load("tpu")
LOCATION = ["--zone=us-east5-a", "--project=my-project"]
POD = tpu.Target("pyoco", "us-east5-a", "my-project")


def dry_run(capsys, *args: str) -> tuple[list[list[str]], list[str], str]:
    """(commands, checks, stderr) printed by `launch/tpu.py ARGS --dry-run`."""
    assert tpu.main([*args, *LOCATION, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    checks = [line.removeprefix("# checked first: ") for line in lines if line.startswith("#")]
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    return commands, [shlex.split(c) for c in checks], err


def remote_script(command: list[str]) -> str:
    (script,) = [arg.removeprefix("--command=") for arg in command if arg.startswith("--command=")]
    return script


@pytest.mark.parametrize(
    "name, workers",
    [("v6e-8", 1), ("v5litepod-8", 1), ("v6e-1", 1), ("v6e-16", 4), ("v5litepod-256", 64), ("v5p-8", 1),
     ("v5p-32", 4), ("v5p-12288", 1536), ("v4-8", 1), ("v4-32", 4), ("v4-4096", 512)],
)  # fmt: skip
def test_workers_per_accelerator_type(name, workers):
    # Google's tables: v4/v5p sizes count TensorCores (8 per 4-chip VM); v5e/v6e count chips, 4 per VM above 8.
    assert tpu.parse_accelerator(name).workers == workers


@pytest.mark.parametrize("name", ["v5p-12", "v6e-512", "v5litepod-2", "v4-8192", "v7-8", "v5e-8", "tpu"])
def test_unknown_accelerator_type_lists_the_valid_families(name):
    with pytest.raises(tpu.LaunchError) as err:
        tpu.parse_accelerator(name)
    message = str(err.value)
    assert repr(name) in message
    assert all(family in message for family in ("v4-8..v4-4096", "v5litepod-1", "v5p-8..v5p-12288", "v6e-1"))


def test_single_host_dry_runs(capsys):
    commands, checks, _ = dry_run(capsys, "create", "--name=pyoco", "--accelerator-type=v6e-8")
    describe = ["gcloud", "compute", "tpus", "tpu-vm", "describe", "pyoco", *LOCATION]
    create = ["gcloud", "compute", "tpus", "tpu-vm", "create", "pyoco", "--accelerator-type=v6e-8"]
    assert checks == [describe]
    assert commands == [[*create, "--version=v2-alpha-tpuv6e", *LOCATION]]

    args = ["train", "--name=pyoco", "--accelerator-type=v5litepod-8", "--config=configs/tiny.py"]
    commands, checks, err = dry_run(capsys, *args, "--workdir=runs/tiny")
    assert "lost when the VM is deleted" in err  # Allowed on one host, with a warning.
    (command,) = commands
    assert command[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pyoco"] and "--worker=all" in command
    assert "--workdir=runs/tiny" in remote_script(command)


def test_multi_host_dry_runs(capsys):
    commands, _, _ = dry_run(capsys, "create", "--name=pyoco", "--accelerator-type=v5p-32", "--spot")
    assert commands == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "pyoco", "--accelerator-type=v5p-32",
         "--version=v2-alpha-tpuv5", "--spot", *LOCATION]
    ]  # fmt: skip

    commands, checks, _ = dry_run(capsys, "setup", "--name=pyoco")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    pack, copy, install = commands
    assert pack[:4] == ["git", "-C", str(REPO), "archive"] and pack[-1] == "HEAD"
    tarball = pack[-2].removeprefix("--output=")
    assert head in tarball
    assert copy == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, "pyoco:pyoco_jax-src.tar.gz",
                    "--worker=all", *LOCATION]  # fmt: skip
    assert install == POD.ssh(remote_script(install)) and "--worker=all" in install
    assert f"echo {head} > " in remote_script(install)  # The revision marker is written by the install.
    assert checks == [POD.ssh(remote_script(checks[0]))] and head in remote_script(checks[0])

    override = "--config.model.block_out_channels=(64, 128)"
    args = ["train", "--name=pyoco", "--accelerator-type=v5p-32", "--config=configs/tiny.py"]
    commands, checks, _ = dry_run(capsys, *args, "--workdir=gs://bucket/runs/pod", override)
    (command,) = commands
    assert command == POD.ssh(remote_script(command)) and "--worker=all" in command
    assert f"--workdir=gs://bucket/runs/pod {shlex.quote(override)}" in remote_script(command)
    assert len(checks) == 1 and "train.pid" in remote_script(checks[0])


def test_queued_resource_dry_runs(capsys):
    args = ["--name=pyoco", "--queued"]
    commands, checks, _ = dry_run(capsys, "create", *args, "--accelerator-type=v6e-16", "--reserved")
    assert checks == [["gcloud", "compute", "tpus", "queued-resources", "describe", "pyoco", *LOCATION]]
    assert commands == [
        ["gcloud", "compute", "tpus", "queued-resources", "create", "pyoco", "--node-id=pyoco",
         "--accelerator-type=v6e-16", "--runtime-version=v2-alpha-tpuv6e", "--reserved", *LOCATION]
    ]  # fmt: skip
    commands, checks, _ = dry_run(capsys, "delete", *args)
    assert checks == [["gcloud", "compute", "tpus", "queued-resources", "describe", "pyoco", *LOCATION]]
    assert commands == [
        ["gcloud", "compute", "tpus", "queued-resources", "delete", "pyoco", "--force", "--quiet", *LOCATION]
    ]  # --force: the queued resource's TPU VM goes too.


def test_argument_errors_name_the_fix(capsys, monkeypatch):
    monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
    monkeypatch.delenv("CLOUDSDK_COMPUTE_ZONE", raising=False)
    create = ["create", "--name=pyoco", "--accelerator-type=v5p-32", "--dry-run"]
    assert tpu.main([*create, "--zone=us-east5-a"]) == 2
    assert "add --project=PROJECT_ID" in capsys.readouterr().err
    assert tpu.main([*create, "--project=my-project"]) == 2
    assert "add --zone=ZONE" in capsys.readouterr().err
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", "env-project")
    monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "europe-west4-a")
    assert tpu.main(create) == 0
    assert "--zone=europe-west4-a --project=env-project" in capsys.readouterr().out

    assert tpu.main(["create", "--name=pyoco", "--accelerator-type=v5p-30", *LOCATION, "--dry-run"]) == 2
    assert "valid types" in capsys.readouterr().err
    train = ["train", "--name=pyoco", "--accelerator-type=v5p-32", "--config=configs/tiny.py", *LOCATION, "--dry-run"]
    assert tpu.main([*train, "--workdir=runs/pod"]) == 2
    assert "4 workers that must share one workdir: use --workdir=gs://" in capsys.readouterr().err
    assert tpu.main([*train[:3], "--config=configs/missing.py", *train[4:], "--workdir=gs://b/r"]) == 2
    assert "configs/tiny.py" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tpu.main([*train, "--workdir=gs://b/r", "--config.train.num_steps", "5"])
    assert "--config.key=value" in capsys.readouterr().err


def test_plans_skip_what_exists_and_refuse_a_second_run():
    v5p32 = tpu.parse_accelerator("v5p-32")
    assert tpu.plan_create(POD, v5p32, tpu.State(exists=True)).commands == []
    assert len(tpu.plan_create(POD, v5p32, tpu.State(exists=False)).commands) == 1

    source = tpu.Source("0123abcd")
    assert tpu.plan_setup(POD, source, tpu.State(installed=True)).commands == []
    assert len(tpu.plan_setup(POD, source, tpu.State(installed=False)).commands) == 3

    job = tpu.TrainJob("configs/tiny.py", "gs://bucket/run")
    with pytest.raises(tpu.LaunchError, match="--restart"):
        tpu.plan_train(POD, v5p32, job, tpu.State(running=True))
    (restart,) = tpu.plan_train(POD, v5p32, job, tpu.State(running=True), restart=True).commands
    assert "kill -TERM" in remote_script(restart)
    (fresh,) = tpu.plan_train(POD, v5p32, job, tpu.State(running=False)).commands
    assert "kill -TERM" not in remote_script(fresh)

    assert tpu.plan_delete(POD, tpu.State(exists=False)).commands == []
    assert tpu.plan_status(POD, tpu.State(exists=False)).commands == []
    assert len(tpu.plan_status(POD, tpu.State(exists=True)).commands) == 2


@pytest.fixture
def worker_home(tmp_path):
    """A scratch $HOME laid out as `setup` leaves a worker, with a pyoco-train that records argv and cwd."""
    root = tmp_path / "pyoco_jax"
    (root / "src").mkdir(parents=True)
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "revision").write_text("0123abcd\n")
    fake = root / "venv" / "bin" / "pyoco-train"
    record = "import json, os, sys, time\n"
    record += "print(json.dumps([os.getcwd(), *sys.argv[1:]]), file=open(os.environ['HOME'] + '/argv', 'a'))\n"
    fake.write_text(f"#!{sys.executable}\n{record}time.sleep(60)\n")
    fake.chmod(0o755)
    started = []
    yield tmp_path, started
    for pid in started:  # Stop the stand-ins this test started.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def bash(home, script: str) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def wait_for_lines(path, count: int) -> list[list[str]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {count} lines")


def test_train_script_starts_once_refuses_a_second_copy_and_restarts(worker_home):
    home, started = worker_home
    job = tpu.TrainJob("configs/tiny.py", "gs://bucket/run", ("--config.model.block_out_channels=(8, 16)",))
    running = remote_script(tpu.running_check(POD))
    assert bash(home, running).returncode == 0  # Nothing runs yet.

    first = bash(home, tpu.train_script(job, restart=False))
    assert first.returncode == 0, first.stderr
    started.append(int((home / "pyoco_jax" / "train.pid").read_text()))
    expected = [str(home / "pyoco_jax" / "src"), "--config=configs/tiny.py", "--workdir=gs://bucket/run"]
    expected += job.overrides
    assert wait_for_lines(home / "argv", 1) == [expected]
    assert bash(home, running).returncode == tpu.BUSY
    assert "training (pid" in bash(home, tpu.status_script()).stdout

    second = bash(home, tpu.train_script(job, restart=False))
    assert second.returncode == 1 and "already runs" in second.stderr
    assert int((home / "pyoco_jax" / "train.pid").read_text()) == started[0]

    third = bash(home, tpu.train_script(job, restart=True))
    assert third.returncode == 0, third.stderr
    started.append(int((home / "pyoco_jax" / "train.pid").read_text()))
    assert started[1] != started[0] and wait_for_lines(home / "argv", 2)[1] == expected
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(started[0])], capture_output=True, text=True).stdout
    assert state.strip()[:1] in ("", "Z")  # The first copy got SIGTERM and is gone (or an unreaped zombie).


def test_setup_and_its_check_skip_a_worker_at_the_same_revision(worker_home):
    home, _ = worker_home
    source = tpu.Source("0123abcd")
    assert bash(home, remote_script(tpu.outdated_check(POD, source))).returncode == 0
    assert bash(home, remote_script(tpu.outdated_check(POD, tpu.Source("fedc9876")))).returncode == tpu.BUSY
    result = bash(home, tpu.setup_script("0123abcd"))  # No tarball, no pip: it must not get that far.
    assert result.returncode == 0 and "already set up" in result.stdout
    assert subprocess.run(["bash", "-n", "-c", tpu.setup_script("fedc9876")]).returncode == 0


def test_worktree_source_packs_untracked_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / ".gitignore").write_text("runs/\n")
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    clean = tpu.current_source(worktree=True, repo=repo)
    (repo / "b.py").write_text("y = 2\n")
    (repo / "runs").mkdir()
    (repo / "runs" / "big.bin").write_bytes(b"0" * 10)
    changed = tpu.current_source(worktree=True, repo=repo)
    assert changed.revision != clean.revision and changed.worktree
    assert not tpu.current_source(worktree=False, repo=repo).uncommitted  # Untracked files do not count.
    (repo / "a.py").write_text("x = 3\n")
    assert tpu.current_source(worktree=False, repo=repo).uncommitted
    out = tmp_path / "src.tar.gz"
    tpu.pack_worktree(str(out), repo=repo)
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == [".gitignore", "a.py", "b.py"]
        assert tar.extractfile("a.py").read() == b"x = 3\n"


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """A `gcloud` on PATH that logs its arguments and answers each verb with a set exit status and stderr."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "gcloud"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps(sys.argv[1:]), file=open(os.environ['FAKE_GCLOUD_LOG'], 'a'))\n"
        "code, err = json.loads(os.environ['FAKE_GCLOUD_ANSWERS']).get(sys.argv[4], [0, ''])\n"
        "sys.stderr.write(err)\nsys.exit(code)\n"
    )
    fake.chmod(0o755)
    log = tmp_path / "gcloud.log"
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))

    def run(args: list[str], answers: dict) -> tuple[int, list[str]]:
        monkeypatch.setenv("FAKE_GCLOUD_ANSWERS", json.dumps(answers))
        log.unlink(missing_ok=True)
        code = tpu.main([*args, *LOCATION])
        verbs = [json.loads(line)[3] for line in log.read_text().splitlines()] if log.exists() else []
        return code, verbs

    return run


def test_runner_checks_then_acts_only_where_needed(fake_gcloud, capsys):
    create = ["create", "--name=pyoco", "--accelerator-type=v6e-8"]
    missing = [1, "ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource was not found\n"]
    assert fake_gcloud(create, {"describe": missing}) == (0, ["describe", "create"])
    assert fake_gcloud(create, {}) == (0, ["describe"])
    assert "already exists" in capsys.readouterr().err
    assert fake_gcloud(create, {"describe": [1, "PERMISSION_DENIED: no access\n"]}) == (2, ["describe"])
    assert "PERMISSION_DENIED" in capsys.readouterr().err  # Not mistaken for "does not exist".

    train = ["train", "--name=pyoco", "--accelerator-type=v5p-32", "--config=configs/tiny.py", "--workdir=gs://b/r"]
    assert fake_gcloud(train, {"ssh": [tpu.BUSY, ""]}) == (2, ["ssh"])
    assert "--restart" in capsys.readouterr().err
    assert fake_gcloud(train, {}) == (0, ["ssh", "ssh"])  # The check, then the start.
