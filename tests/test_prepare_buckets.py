"""`pyoco-prepare` with data.buckets: a cache of two aspect ratios that trains, resumes and refuses to mix.

A tiny random SD VAE and CLIP encoder; a folder of square and wide videos (and one too short for any bucket)
in an order that makes each shard encode a full batch of one bucket before the other bucket's remainder. Each record
is checked against diffusers' VAE encoding its clip alone at its bucket's shape, and its context against its
own caption's. Also: the plan of a bucketed run is the largest bucket's, and FVD's real clips have the sampled
shape.
"""

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from flax import nnx
from grain.sources import ArrayRecordDataSource

from pyoco_jax.config import load_config
from pyoco_jax.data import latents
from pyoco_jax.data.buckets import Bucket
from pyoco_jax.data.clip_sampling import ClipSpec
from pyoco_jax.data.decode import decode_clip
from pyoco_jax.data.loader import make_source
from pyoco_jax.errors import UserError
from pyoco_jax.evaluate.run_eval import Evaluator
from pyoco_jax.models.vae.wan import WanVAE, WanVAEConfig
from pyoco_jax.prepare import BUCKETS_SUFFIX, clip_draws, pixel_buckets, prepare
from pyoco_jax.sample.latent_vae import LatentVAE, load_latent_vae
from pyoco_jax.sample.text import load_prompt_encoder
from pyoco_jax.train.plan import Plan, format_plan, plan_example
from tests.data.videos import coded_frames, write_mp4
from tests.models.clip_testing import TINY_TEXT_ENCODER, save_text_encoder, save_vocab
from tests.models.vae_testing import save_tiny_vae, to_nchw
from tests.train.helpers import FAST, REPO, TINY, single_device_env

CONFIG = str(REPO / "configs" / "tiny_latent.py")
BUCKETS = ((8, 8, 4), (8, 12, 4))  # Latent (height, width, frames): square and 2:3 wide; the VAE's factor is 2.
PIXELS = {0: (16, 16), 1: (16, 24)}  # Bucket -> the (height, width) of its clips.
CLIPS, BATCH = 4, 8  # Clips per video; clips per encoded batch (the 8 fake devices of conftest, one each).
# (name, height, width, frames): shard 0 holds the first 3 (a full square batch, then the wide remainder),
# shard 1 the rest (a full wide batch, then the square remainder); "short" fills no bucket.
VIDEOS = [("w0", 32, 48, 12), ("s0", 32, 32, 12), ("s1", 32, 32, 12), ("w1", 32, 48, 12), ("s2", 32, 32, 12)]
VIDEOS += [("short", 32, 32, 3), ("w2", 32, 48, 12)]
RECORD_BUCKETS = [[0] * 8 + [1] * 4, [1] * 8 + [0] * 4]
RATE = "frame_stride=1"
STATE = ("params", "frozen", "opt_state", "ema")
ONE_LEVEL = [  # tiny_latent's U-Net at one level, and one sampling step at the end: each compile takes ~10 s.
    "model.block_out_channels=(32,)",
    "model.attention_levels=(True,)",
    "model.temporal.levels=(0,)",
    "model.temporal.mid=False",
    "model.mid_block_attention=False",
    "sample.num_steps=1",
    "sample.num_samples=1",
]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(encoders folder, videos folder, the cache prepared from them, the config, the first report)."""
    root = tmp_path_factory.mktemp("prepare_buckets")
    sd, videos, cache = root / "sd", root / "videos", root / "latents"
    save_tiny_vae(sd / "vae")
    save_text_encoder(sd / "text_encoder", **TINY_TEXT_ENCODER)
    save_vocab(sd / "tokenizer")
    videos.mkdir()
    rows = ["path,caption,label"]
    for label, (name, height, width, frames) in enumerate(VIDEOS):
        write_mp4(videos / f"{name}.mp4", np.roll(coded_frames(frames, height, width), label, axis=0), fps=8)
        rows.append(f"{name}.mp4,video number {label},{label}")
    (videos / "metadata.csv").write_text("\n".join(rows) + "\n")
    config = load_config(CONFIG, _overrides(sd, cache, BUCKETS), reads_data=False)
    report = prepare(config, str(videos), cache, num_shards=2, batch_size=BATCH)
    return sd, videos, cache, config, report


def _overrides(sd, cache, buckets) -> list[str]:
    encoders = [f"data.path={cache}", f"vae.path={sd}", f"text.path={sd}"]
    return [*encoders, f"data.buckets={buckets}", f"prepare.clips_per_stride={CLIPS}"]


def _records(cache) -> list[dict]:
    files = [str(cache / shard["file"]) for shard in latents.read_index(cache)["shards"]]
    records = ArrayRecordDataSource(files)
    return [latents.decode_record(records[i]) for i in range(len(records))]


def _contents(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_the_cache_holds_each_clip_at_its_buckets_shape_as_encoded_alone(made):
    sd, videos, cache, config, report = made
    assert (report.examples, report.shards_written, report.bad_files) == (24, 2, 0)
    assert report.too_short == {RATE: 1} and report.clips_per_bucket == {"8x8x4": 12, "8x12x4": 12}
    index = latents.read_index(cache)
    assert index["buckets"] == [list(b) for b in BUCKETS]
    assert [shard["record_buckets"] for shard in index["shards"]] == RECORD_BUCKETS

    vae = TorchAutoencoderKL.from_pretrained(sd / "vae").eval()
    encode_text = load_prompt_encoder(config)
    records = _records(cache)
    buckets = [b for shard in RECORD_BUCKETS for b in shard]
    assert sorted(int(r["label"]) for r in records) == sorted([0, 1, 2, 3, 4, 6] * CLIPS)
    clip_number = {}  # Video -> its clips met so far: the k-th of a video's records is its clip k.
    for record, bucket in zip(records, buckets, strict=True):
        label = int(record["label"])
        name, *_ = VIDEOS[label]
        height, width = PIXELS[bucket]
        assert name[0] == "sw"[bucket]  # Square videos in bucket 0, wide ones in bucket 1.
        spec = ClipSpec(4, height, width, frame_stride=1, temporal="random", crop="center")
        clip_number[name] = clip_number.get(name, -1) + 1
        draws = clip_draws(config.seed, f"{name}.mp4|0.0|None", RATE, CLIPS)[clip_number[name]]
        clip = decode_clip(videos / f"{name}.mp4", spec, draws)
        assert int(record["first_frame"]) == clip.first_frame and float(record["fps"]) == 8.0
        with torch.no_grad():
            posterior = vae.encode(to_nchw(clip.frames.astype(np.float32) / 127.5 - 1.0)).latent_dist
        mean = posterior.mean.numpy().transpose(0, 2, 3, 1)
        assert record["mean"].shape == mean.shape == (4, *BUCKETS[bucket][:2], 4)
        scale = np.abs(mean).max()
        np.testing.assert_allclose(record["mean"].astype(np.float32), mean, atol=2e-3 * scale)
        std = posterior.std.numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(record["std"].astype(np.float32), std, rtol=2e-3, atol=1e-4)
        own = encode_text([f"video number {label}"])[0]
        np.testing.assert_allclose(record["context"].astype(np.float32), own, atol=2e-3 * np.abs(own).max())


def test_an_interrupted_prepare_resumes_and_other_buckets_are_refused(made, tmp_path):
    sd, videos, cache, _, _ = made
    copy = tmp_path / "latents"
    shutil.copytree(cache, copy)
    before = _contents(copy)
    # Stopped while writing shard 1: shard 0 and its bucket list are finished, shard 1 is partial, no index yet.
    second = latents.shard_name(1, 2)
    (copy / second).rename(copy / f"{second}.partial")
    (copy / f"{second}{BUCKETS_SUFFIX}").unlink()
    (copy / latents.INDEX_NAME).unlink()
    config = load_config(CONFIG, _overrides(sd, copy, BUCKETS), reads_data=False)
    report = prepare(config, str(videos), copy, num_shards=2, batch_size=BATCH)
    assert (report.examples, report.shards_skipped, report.shards_written) == (12, 1, 1)
    assert _contents(copy) == before  # The same cache, index (shard 0's record_buckets) included.

    square_only = load_config(CONFIG, _overrides(sd, copy, BUCKETS[:1]), reads_data=False)
    unbucketed = load_config(CONFIG, _overrides(sd, copy, ()), reads_data=False)
    for other in (square_only, unbucketed):
        with pytest.raises(ValueError, match="use a new --out folder"):
            prepare(other, str(videos), copy, num_shards=2, batch_size=BATCH)
    (copy / latents.INDEX_NAME).unlink()  # Stopped before the index: the shards' lists still refuse a mix.
    for other in (square_only, unbucketed):
        with pytest.raises(ValueError, match="use a new --out folder"):
            prepare(other, str(videos), copy, num_shards=2, batch_size=BATCH)


def test_pyoco_train_runs_on_the_bucketed_cache_which_refuses_other_buckets(made, tmp_path):
    sd, _, cache, config, _ = made
    workdir = tmp_path / "run"
    # A global batch of 12 is a whole bucket: the 2 steps are one of each shape.
    steps = ["data.global_batch_size=12", "train.num_steps=2", "train.checkpoint_every=2", "train.log_every=1"]
    command = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={CONFIG}", f"--workdir={workdir}"]
    command += [f"--config.{item}" for item in (*_overrides(sd, cache, BUCKETS), *ONE_LEVEL, *steps)]
    result = subprocess.run(command, env=single_device_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / "checkpoints" / "2").exists()

    data = config.data.copy_and_resolve_references()
    data.buckets = BUCKETS[:1]
    with pytest.raises(UserError, match=r"config key 'data.buckets'.*set data.buckets=\(\(8, 8, 4\), \(8, 12, 4\)\)"):
        make_source(data, seed=0)
    data.buckets = ()
    with pytest.raises(UserError, match="holds buckets") as caught:
        make_source(data, seed=0)
    assert "\n" not in str(caught.value)


def test_fvd_real_clips_have_the_sampled_shape(made, tmp_path):
    sd, videos, cache, config, _ = made
    # Square clips 10 and 11 are records 22 and 23 (records 8 to 19 are wide): the cache's 8x8x4 bucket.
    square = Evaluator(config, "fvd", protocol="fvd2_4f", batch=2)._real_clips(10)
    assert square.shape == (2, 4, 16, 16, 3) and square.dtype == np.uint8
    elsewhere = load_config(CONFIG, [*_overrides(sd, cache, BUCKETS), "data.resolution=12"], reads_data=False)
    with pytest.raises(UserError, match=r"12x12x4 latents .* has buckets \['8x8x4', '8x12x4'\] only"):
        Evaluator(elsewhere, "fvd", protocol="fvd2_4f")._real_clips(0)
    # A video folder run: 4 clips are more than the square bucket's 3, and they are cut to the sampled shape.
    pixels = [f"data.path={videos}", "data.source=video_folder", "data.num_classes=0", "model.num_classes=0"]
    folder = load_config(TINY, [*FAST, *pixels, "data.buckets=((16,16,4),(16,24,4))"])
    clips = Evaluator(folder, "fvd", protocol="fvd4_4f")._real_clips(0)
    assert clips.shape == (4, 4, 16, 16, 3) and clips.dtype == np.uint8


def test_buckets_become_the_video_shapes_that_each_vae_encodes_to_them(made):
    normal = dict(latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4)
    wan_config = WanVAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1, **normal)
    wan = LatentVAE(nnx.eval_shape(lambda: WanVAE(wan_config, rngs=nnx.Rngs(0))))  # Shapes only: no weights.
    latent = (Bucket(2, 3, 2), Bucket(4, 4, 1))
    assert pixel_buckets(latent, wan) == (Bucket(16, 24, 5), Bucket(32, 32, 1))  # 8x, and 1 + 4 (f - 1) frames.
    sd = load_latent_vae(made[3], "the test")
    assert pixel_buckets(latent, sd) == (Bucket(4, 6, 2), Bucket(8, 8, 1))  # 2x, frame by frame.


def test_a_bucketed_plan_is_the_largest_buckets(made):
    sd, _, cache, _, _ = made
    buckets = "data.buckets=((8,8,4),(8,12,4),(8,8,2))"
    config = load_config(CONFIG, [*_overrides(sd, cache, BUCKETS), buckets], reads_data=False)
    example = plan_example(config)
    assert example["video"].shape == (4, 8, 12, 4) and example["video"].dtype == np.float32
    figures = {field.name: 0 for field in dataclasses.fields(Plan)}
    figures.update(topology="cpu:1", mesh={}, chip=None, state_bytes=dict.fromkeys(STATE, 0), attention_kernels=())
    plan = Plan(**figures)
    assert "batch 2 x 4 frames x 8x12 (the largest of data.buckets)" in format_plan(plan, config)
