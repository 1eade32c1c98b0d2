"""The latent text-to-video path end to end, on a tiny Stable Diffusion pipeline made here with random weights.

pipeline -> pyoco-convert (one Orbax checkpoint) ; videos + captions -> pyoco-prepare (VAE latents, CLIP
context, ArrayRecord shards) -> pyoco-train from the shards with the converted U-Net inflated ->
pyoco-sample --prompt -> an mp4 of the right size and length.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from pyoco_jax.config import load_config
from pyoco_jax.convert.clip import load_text_encoder
from pyoco_jax.convert.merge import flat_params
from pyoco_jax.convert.vae import load_vae_params
from pyoco_jax.data.latents import LatentShardSource, read_index
from pyoco_jax.data.video_io import read_video
from pyoco_jax.prepare import prepare
from tests.data.videos import coded_frames, write_mp4
from tests.models.clip_testing import TINY_TEXT_ENCODER, save_text_encoder, save_vocab
from tests.models.vae_testing import save_tiny_vae
from tests.train.helpers import REPO, single_device_env

CONFIG = str(REPO / "configs" / "tiny_latent.py")
CAPTIONS = ["a cat sitting on a windowsill", "two dogs playing fetch in a park", "clouds moving over mountains"]
FRAMES, LATENT_SIDE, VAE_FACTOR = 4, 8, 2  # The tiny VAE has 2 levels: 16x16 pixels -> 8x8 latents.


def _pipeline(folder):
    """unet/, vae/, text_encoder/, tokenizer/ of a random tiny SD pipeline."""
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=LATENT_SIDE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4,
        cross_attention_dim=32,
        norm_num_groups=8,
    ).save_pretrained(folder / "unet")
    save_tiny_vae(folder / "vae")
    save_text_encoder(folder / "text_encoder", **TINY_TEXT_ENCODER)
    save_vocab(folder / "tokenizer")


def _videos(folder):
    folder.mkdir()
    rows = ["path,caption"]
    for i, caption in enumerate(CAPTIONS):
        write_mp4(folder / f"clip{i}.mp4", np.roll(coded_frames(12, 24, 32), i, axis=0), fps=8)
        rows.append(f"clip{i}.mp4,{caption}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")


def flat(module) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.get_value()) for k, v in flat_params(module).items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_convert_prepare_train_and_sample_text_to_video(tmp_path):
    sd, videos, cache, workdir = tmp_path / "sd", tmp_path / "videos", tmp_path / "latents", tmp_path / "run"
    pipe = tmp_path / "converted"
    _pipeline(sd)
    _videos(videos)
    command = [sys.executable, "-m", "pyoco_jax.cli.convert", f"--diffusers={sd}", f"--config={CONFIG}"]
    result = subprocess.run(command + [f"--out={pipe}"], env=single_device_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "unet:" in result.stdout and "new" in result.stdout.split("unet:")[1].splitlines()[0]  # temporal layers
    assert _same(load_vae_params(pipe)[1], load_vae_params(sd)[1])
    assert _same(flat(load_text_encoder(pipe)), flat(load_text_encoder(sd)))
    config = load_config(CONFIG, [f"data.path={cache}", f"vae.path={pipe}", f"text.path={pipe}"])

    report = prepare(config, str(videos), cache, num_shards=2)
    assert (report.examples, report.shards_written, report.bad_files) == (3, 2, 0)
    again = prepare(config, str(videos), cache, num_shards=2)  # Finished shards are skipped.
    assert (again.examples, again.shards_skipped) == (0, 2)
    index = read_index(cache)
    assert index["latent_shape"] == [FRAMES, LATENT_SIDE, LATENT_SIDE, 4] and index["context_shape"] == [77, 32]
    source = LatentShardSource(cache, seed=0)
    element = source[1]
    assert element["video"].shape == (FRAMES, LATENT_SIDE, LATENT_SIDE, 4) and element["context"].shape == (77, 32)
    assert np.isfinite(element["video"]).all() and source.null_context().shape == (77, 32)

    overrides = [
        f"data.path={cache}",
        f"vae.path={pipe}",
        f"text.path={pipe}",
        f"train.init_from={pipe}",
        "train.num_steps=3",
        "train.checkpoint_every=3",
        "data.global_batch_size=2",
    ]
    train = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={CONFIG}", f"--workdir={workdir}"]
    result = subprocess.run(
        train + [f"--config.{o}" for o in overrides], env=single_device_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / "checkpoints" / "3").exists()

    out = tmp_path / "cat.mp4"
    sample = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={workdir}", "--num=2", "--steps=3"]
    result = subprocess.run(
        sample + ["--prompt=a cat sitting on a windowsill", f"--out={out}"],
        env=single_device_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    frames, _ = read_video(out)
    side = LATENT_SIDE * VAE_FACTOR
    assert frames.shape[0] == FRAMES and frames.shape[1] >= side and frames.shape[2] >= 2 * side
