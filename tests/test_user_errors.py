"""Every mistake a user can make on `pyoco-train` ends in one line that names what to change.

Each case runs the real console script in a fresh process and asserts: a non-zero exit status, no
Python traceback, exactly one `pyoco-train:` line on stderr, naming the key, flag or path, and no
checkpoint written (the error came before training).
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.data.videos import write_mp4
from tests.train.helpers import REPO, single_device_env

pytestmark = pytest.mark.slow

TINY = "configs/tiny.py"

# (arguments after `--config configs/tiny.py --workdir DIR`, text the error line must contain)
CASES = {
    "unknown key": (["--config.optim.lerning_rate=1e-3"], "optim.lerning_rate"),
    "unknown section": (["--config.optimizer.learning_rate=1e-3"], "optimizer"),
    "override without a value": (["--config.optim.learning_rate"], "optim.learning_rate"),
    "a word for a number": (["--config.optim.learning_rate=fast"], "optim.learning_rate"),
    "a fraction for an integer": (["--config.train.num_steps=1.5"], "train.num_steps"),
    "not a boolean": (["--config.data.shuffle=maybe"], "data.shuffle"),
    "negative learning rate": (["--config.optim.learning_rate=-1e-3"], "optim.learning_rate"),
    "NaN learning rate": (["--config.optim.learning_rate=nan"], "optim.learning_rate"),
    "infinite learning rate": (["--config.optim.learning_rate=inf"], "optim.learning_rate"),
    "negative steps": (["--config.train.num_steps=-5"], "train.num_steps"),
    "zero steps": (["--config.train.num_steps=0"], "train.num_steps"),
    "NaN guidance": (["--config.sample.guidance_scale=nan"], "sample.guidance_scale"),
    "negative guidance": (["--config.sample.guidance_scale=-2"], "sample.guidance_scale"),
    "zero batch": (["--config.data.global_batch_size=0"], "data.global_batch_size"),
    "negative batch": (["--config.data.global_batch_size=-8"], "data.global_batch_size"),
    "zero frames": (["--config.data.num_frames=0"], "data.num_frames"),
    "resolution the U-Net cannot halve": (["--config.data.resolution=18"], "data.resolution"),
    "spatial heads do not divide channels": (["--config.model.num_attention_heads=3"], "model.num_attention_heads"),
    "temporal heads do not divide channels": (["--config.model.temporal.num_heads=5"], "model.temporal.num_heads"),
    "groups do not divide channels": (["--config.model.norm_num_groups=5"], "model.norm_num_groups"),
    "EMA decay above one": (["--config.optim.ema_decay=1.5"], "optim.ema_decay"),
    "negative clipping": (["--config.optim.grad_clip_norm=-1"], "optim.grad_clip_norm"),
    "negative warmup": (["--config.optim.warmup_steps=-1"], "optim.warmup_steps"),
    "zero accumulation": (["--config.optim.accum_steps=0"], "optim.accum_steps"),
    "label drop above one": (["--config.optim.label_drop_rate=2"], "optim.label_drop_rate"),
    "negative alpha": (["--config.noise.alpha=-1"], "noise.alpha"),
    "unknown prior": (["--config.noise.prior=gaussian"], "noise.prior"),
    "FVD protocol that is not one": (["--config.train.eval_protocol=fvd100"], "train.eval_protocol"),
    "CLIPSIM without a CLIP model": (
        ["--config.train.eval_every=10", "--config.train.eval_metric=clipsim"],
        "train.eval_clip",
    ),
    "missing CLIP folder": (["--config.train.eval_clip=no/such/clip"], "train.eval_clip"),
    "unknown sampler": (["--config.sample.sampler=ancestral"], "sample.sampler"),
    "zero sampler steps": (["--config.sample.num_steps=0"], "sample.num_steps"),
    "sigma range reversed": (["--config.diffusion.edm.sigma_min=20"], "diffusion.edm.sigma_min"),
    "zero checkpoint interval": (["--config.train.checkpoint_every=0"], "train.checkpoint_every"),
    "bad trainable regex": (["--config.optim.trainable=temporal("], "optim.trainable"),
    "bad lr-scale regex": (["--config.optim.lr_scale_pattern=[temporal"], "optim.lr_scale_pattern"),
    "frames that the sequence axis cannot split": (["--config.mesh.sequence=3"], "data.num_frames"),
    "mesh axis of size zero": (["--config.mesh.fsdp=0"], "mesh.fsdp"),
    "missing pretrained folder": (
        ["--config.train.init_from=no/such/unet", "--config.diffusion.edm.pretrained_prediction=edm"],
        "train.init_from",
    ),
    "pretrained DDPM model without its parameterization": (
        ["--config.train.init_from={empty}"],
        "diffusion.edm.pretrained_prediction",
    ),
    "missing VAE folder": (["--config.vae.path=no/such/vae"], "vae.path"),
    "missing text encoder": (["--config.text.path=no/such/clip"], "text.path"),
    "missing video folder": (["--config.data.source=video_folder", "--config.data.path=no/such/videos"], "data.path"),
    "video folder not set": (["--config.data.source=video_folder"], "data.path"),
    "missing latent cache": (["--config.data.source=latents", "--config.data.path=no/such/cache"], "data.path"),
    "folder that is no latent cache": (["--config.data.source=latents", "--config.data.path={empty}"], "data.path"),
    "no metadata in the folder": (["--config.data.source=video_folder", "--config.data.path={empty}"], "data.metadata"),
    "missing metadata file": (
        ["--config.data.source=video_folder", "--config.data.path={videos}", "--config.data.metadata=nope.csv"],
        "data.metadata",
    ),
    "labels asked of captions-only metadata": (
        ["--config.data.source=video_folder", "--config.data.path={videos}"],
        "data.num_classes",
    ),
    "metadata split that does not exist": (
        ["--config.data.source=video_folder", "--config.data.path={split_videos}", "--config.data.split=validation"],
        "data.split",
    ),
    "unknown flag": (["--wrkdir=runs/x"], "wrkdir"),
    "stray argument": (["extra"], "extra"),
    "missing config file": (["--config=configs/nope.py"], "configs/nope.py"),
    "workdir that is a file": (["--workdir={file}"], "--workdir"),
}


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("user_errors")
    (root / "empty").mkdir()
    videos = root / "videos"
    videos.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    write_mp4(videos / "clip.mp4", frames)
    (videos / "metadata.csv").write_text("path,caption\nclip.mp4,a clip\n")
    split_videos = root / "split_videos"
    split_videos.mkdir()
    write_mp4(split_videos / "clip.mp4", frames)
    (split_videos / "metadata.csv").write_text("path,label,split\nclip.mp4,0,train\n")
    (root / "a_file").write_text("not a directory")
    return {
        "empty": str(root / "empty"),
        "videos": str(videos),
        "split_videos": str(split_videos),
        "file": str(root / "a_file"),
    }


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_error_is_one_clear_line(name, tmp_path, places):
    args, named = CASES[name]
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={TINY}", f"--workdir={workdir}"]
    command += [arg.format(**places) for arg in args]
    result = subprocess.run(
        command, cwd=REPO, env=single_device_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("pyoco-train:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert named in lines[0], lines[0]
    assert not (pathlib.Path(workdir) / "checkpoints").exists()
