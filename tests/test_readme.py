"""The README's commands, read from README.md itself: the two set-up commands CI runs, and the video-folder example."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from tests.data.videos import write_mp4
from tests.train.helpers import REPO, single_device_env

_spec = importlib.util.spec_from_file_location("ci_readme", REPO / ".ci" / "readme.py")
ci_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ci_readme)

README = (REPO / "README.md").read_text()
QUICK = ["--config.train.num_steps=2", "--config.train.log_every=1", "--config.sample.num_steps=2"]


def test_the_readme_opens_with_the_install_and_train_and_the_test_commands():
    commands = ci_readme.setup_commands(README)
    assert '.venv/bin/pip install -e ".[video]"' in commands["main"]  # Only the extra the main job needs.
    assert commands["main"].endswith("pyoco-train --config configs/tiny.py --workdir runs/tiny")
    assert ci_readme.workdir_of(commands["main"]) == "runs/tiny"  # Relative, as a new user types it.
    assert "pytest" in commands["test"] and ".[test,video,convert]" in commands["test"]


def test_a_readme_without_the_two_commands_is_refused():
    with pytest.raises(SystemExit, match="two one-line"):
        ci_readme.setup_commands("# title\n\n```bash\npip install .\n```\n")
    with pytest.raises(SystemExit, match="pyoco-train"):
        ci_readme.setup_commands("```bash\npip install .\n```\n```bash\npytest\n```\n")


def readme_command(marker: str) -> list[str]:
    """The README's bash command containing `marker`, line continuations joined, as words."""
    for block in re.findall(r"^```bash\n(.*?)^```", README, re.MULTILINE | re.DOTALL):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if marker in line:
                return shlex.split(line)
    raise AssertionError(f"no README command contains {marker!r}")


@pytest.mark.slow
def test_the_video_folder_example_works_as_written_on_a_captions_only_folder(tmp_path):
    videos = tmp_path / "my_videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4"):
        write_mp4(videos / name, rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8))
    (videos / "metadata.csv").write_text("path,caption\na.mp4,a red ball\nb.mp4,a blue box\n")
    os.symlink(REPO / "configs", tmp_path / "configs")  # The README runs from the repository root.

    words = readme_command("data.source=video_folder")
    assert words[0] == "pyoco-train"
    command = [sys.executable, "-m", "pyoco_jax.cli.train", *(w.replace("VIDEOS", "my_videos") for w in words[1:])]
    result = subprocess.run(
        [*command, *QUICK], cwd=tmp_path, env=single_device_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "2").is_dir()
    assert (tmp_path / "runs" / "mine" / "samples" / "step_0000002.mp4").is_file()
