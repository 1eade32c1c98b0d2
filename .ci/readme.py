"""The README's two set-up commands, read from README.md itself, and a check of what the first one leaves.

    python3 .ci/readme.py main            # prints the first command (install + train tiny)
    python3 .ci/readme.py test            # prints the second (install test extras + pytest)
    .venv/bin/python .ci/readme.py check WORKDIR STEPS   # the checkpoint and the sample mp4 are there

The commands are the first two ```bash blocks of README.md; CI runs them as written, so a README edit
that breaks them fails CI.
"""

import pathlib
import re
import shlex
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def setup_commands(text: str) -> dict[str, str]:
    """{"main": ..., "test": ...}: the first two bash blocks, each one line ending in the command it promises."""
    blocks = [block.strip() for block in _BLOCK.findall(text)[:2]]
    if len(blocks) < 2 or any("\n" in block for block in blocks):
        raise SystemExit("README.md must open with two one-line ```bash blocks: install+train, install+test")
    main, test = blocks
    if not shlex.split(main.split("&&")[-1])[0].endswith("pyoco-train"):
        raise SystemExit(f"README.md's first command must end by running pyoco-train: {main}")
    if "pytest" not in test.split("&&")[-1]:
        raise SystemExit(f"README.md's second command must end by running pytest: {test}")
    return {"main": main, "test": test}


def workdir_of(command: str) -> str:
    """The --workdir of the command's last step (`--workdir X` or `--workdir=X`)."""
    words = shlex.split(command.split("&&")[-1])
    for i, word in enumerate(words):
        if word == "--workdir":
            return words[i + 1]
        if word.startswith("--workdir="):
            return word.split("=", 1)[1]
    raise SystemExit(f"no --workdir in {command}")


def check_outputs(workdir: str, steps: int) -> None:
    """The run left a checkpoint at its last step and a decodable sample mp4 from it."""
    import av

    root = pathlib.Path(workdir)
    checkpoint = root / "checkpoints" / str(steps)
    if not (checkpoint / "state").is_dir():
        raise SystemExit(f"no checkpoint at {checkpoint}: found {sorted(p.name for p in root.glob('checkpoints/*'))}")
    video = root / "samples" / f"step_{steps:07d}.mp4"
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    if frames == 0:
        raise SystemExit(f"{video} has no frames")
    print(f"main job left {checkpoint} and {video} ({frames} frames)")


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check_outputs(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "workdir":
        print(workdir_of(setup_commands(README.read_text())["main"]))
    else:
        print(setup_commands(README.read_text())[sys.argv[1]])
