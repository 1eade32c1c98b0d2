"""The latent text-to-video path end to end, on a tiny Stable Diffusion pipeline made here with random weights.

pipeline -> pyoco-convert (one Orbax checkpoint) ; videos + captions -> pyoco-prepare (VAE latents, CLIP
context, ArrayRecord shards) -> pyoco-train from the shards with the converted U-Net inflated ->
pyoco-sample --prompt -> an mp4 of the right size and length; FVD in the loop and from pyoco-eval (real clips:
the cache's latents decoded) and CLIPSIM with a tiny CLIPModel. Also: the cache's several random clips per
video at several strides, each with its own fps, through the loader.
"""

import collections
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from grain.sources import ArrayRecordDataSource
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pyoco_jax.configs import default

from pyoco_jax.config import load_config
from pyoco_jax.convert.clip import load_text_encoder
from pyoco_jax.convert.merge import flat_params
from pyoco_jax.convert.vae import load_vae_params
from pyoco_jax.data import latents
from pyoco_jax.data.clip_sampling import ClipSpec, clip_times
from pyoco_jax.data.latents import LatentShardSource, read_index
from pyoco_jax.data.loader import Loader
from pyoco_jax.data.video_io import read_video
from pyoco_jax.prepare import check_config, clip_draws, prepare
from pyoco_jax.sample.cascade import hand_over, interpolate
from pyoco_jax.sample.run_sampler import load_run_sampler
from tests.data.videos import CAPTIONS, coded_frames, write_captioned_videos, write_mp4
from tests.models.clip_testing import TINY_TEXT_ENCODER, save_clip_model, save_text_encoder, save_vocab
from tests.models.vae_testing import save_tiny_vae
from tests.train.helpers import REPO, single_device_env

CONFIG = str(REPO / "configs" / "tiny_latent.py")
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


def flat(module) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.get_value()) for k, v in flat_params(module).items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_convert_prepare_train_and_sample_text_to_video(tmp_path):
    sd, videos, cache, workdir = tmp_path / "sd", tmp_path / "videos", tmp_path / "latents", tmp_path / "run"
    pipe = tmp_path / "converted"
    _pipeline(sd)
    write_captioned_videos(videos)
    command = [sys.executable, "-m", "pyoco_jax.cli.convert", f"--diffusers={sd}", f"--config={CONFIG}"]
    result = subprocess.run(command + [f"--out={pipe}"], env=single_device_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "unet:" in result.stdout and "new" in result.stdout.split("unet:")[1].splitlines()[0]  # temporal layers
    assert _same(load_vae_params(pipe)[1], load_vae_params(sd)[1])
    assert _same(flat(load_text_encoder(pipe)), flat(load_text_encoder(sd)))
    config = load_config(CONFIG, [f"data.path={cache}", f"vae.path={pipe}", f"text.path={pipe}"], reads_data=False)

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
        "train.eval_every=3",
        "train.eval_protocol=fvd3_4f",  # All 3 cached clips: checks the path runs, no more.
        f"sample.prompts={tuple(CAPTIONS[:2])}",
    ]
    train = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={CONFIG}", f"--workdir={workdir}"]
    result = subprocess.run(
        train + [f"--config.{o}" for o in overrides], env=single_device_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / "checkpoints" / "3").exists()
    in_loop = json.loads((workdir / "eval" / "step_0000003.json").read_text())["eval/fvd"]
    stats = list((cache / "fvd_stats").glob("latents-*_train_fvd3_4f_seed0.npz"))  # Cached next to the data.
    assert in_loop > 0 and len(stats) == 1

    evaluate = [sys.executable, "-m", "pyoco_jax.cli.eval", f"--workdir={workdir}", "--batch=2"]
    result = subprocess.run([*evaluate, "--protocol=fvd3_4f"], env=single_device_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]  # The same seeds and prompts as the in-loop evaluation:
    assert json.loads(result.stdout.splitlines()[-1])["eval/fvd"] == pytest.approx(in_loop, rel=1e-3)
    save_clip_model(tmp_path / "clip")
    result = subprocess.run(
        [*evaluate, "--metric=clipsim", "--num=4", f"--clip={tmp_path / 'clip'}"],
        env=single_device_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    scored = json.loads(result.stdout.splitlines()[-1])
    assert -1 <= scored["eval/clipsim"] <= 1 and scored["eval/clipsim_ci95"] > 0

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
    _latent_interpolation(tmp_path, workdir, overrides[:4])  # The same cache, VAE, text encoder and U-Net.


LATENT_STAGE = (  # MagicVideo's latent frame interpolation: 2 keyframes' latents -> 4 frames (k = 3).
    "condition.frames=random",  # Also image-to-video and extension, from one model.
    "condition.interpolation_factor=3",
    "condition.given_frames=1",
    "condition.augment_sigma_max=0.2",
    "condition.sample_augment_sigma=0.05",
    "model.condition_channels=5",
    "model.condition_augmentation=True",
    "train.num_steps=2",
    "train.checkpoint_every=2",
)


def _latent_interpolation(tmp_path, base_dir, sources: list[str]):
    """A latent interpolation stage keeps the keyframes' latents exactly, in process and through the CLI cascade."""
    stage_dir = tmp_path / "interpolation"
    command = [sys.executable, "-m", "pyoco_jax.cli.train", f"--config={CONFIG}", f"--workdir={stage_dir}"]
    command += [f"--config.{o}" for o in (*sources, *LATENT_STAGE)]
    result = subprocess.run(command, env=single_device_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    base, stage = load_run_sampler(str(base_dir), num_steps=2), load_run_sampler(str(stage_dir), num_steps=2)
    latents, _ = base.sample(2, seed=0, prompts=CAPTIONS[:1], pixels=False)
    filled = interpolate(stage, hand_over(base, stage, latents), None, 1, CAPTIONS[:1])
    assert filled.shape == (2, (FRAMES - 1) * 3 + 1, LATENT_SIDE, LATENT_SIDE, 4)
    np.testing.assert_array_equal(filled[:, ::3], latents)

    out = tmp_path / "interpolated.mp4"
    sample = [sys.executable, "-m", "pyoco_jax.cli.sample", f"--workdir={base_dir}", f"--cascade={stage_dir}"]
    result = subprocess.run(
        [*sample, "--num=1", "--steps=2", f"--prompt={CAPTIONS[0]}", f"--out={out}"],
        env=single_device_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(read_video(tmp_path / "interpolated.stage0.mp4")[0]) == FRAMES
    assert len(read_video(out)[0]) == (FRAMES - 1) * 3 + 1


NATIVE_FPS, LONG, SHORT = 8, 32, 10  # A 10-frame video has no 4-frame clip at stride 4 (it spans 13 frames).
STRIDES, CLIPS = (1, 2, 4), 3


def _stride_videos(folder):
    """Two long videos, a short one and a missing file; the label column numbers the videos."""
    folder.mkdir()
    for name, frames in [("long0.mp4", LONG), ("long1.mp4", LONG), ("short.mp4", SHORT)]:
        write_mp4(folder / name, coded_frames(frames, 24, 32), fps=NATIVE_FPS)
    names = ["long0.mp4", "long1.mp4", "short.mp4", "missing.mp4"]
    rows = "".join(f"{name},video {i},{i}\n" for i, name in enumerate(names))
    (folder / "metadata.csv").write_text("path,caption,label\n" + rows)


def _stored(cache) -> list[dict]:
    records = ArrayRecordDataSource([str(cache / shard["file"]) for shard in read_index(cache)["shards"]])
    return [latents.decode_record(records[i]) for i in range(len(records))]


def _contents(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.slow
def test_prepare_stores_random_clips_at_several_strides_with_their_fps(tmp_path):
    videos, cache = tmp_path / "videos", tmp_path / "latents"
    save_tiny_vae(tmp_path / "vae")
    _stride_videos(videos)
    overrides = [f"data.path={cache}", f"vae.path={tmp_path / 'vae'}", "text.path="]
    strides = [f"prepare.frame_strides={STRIDES}", f"prepare.clips_per_stride={CLIPS}"]
    config = load_config(CONFIG, overrides + strides, reads_data=False)

    report = prepare(config, str(videos), cache, num_shards=2)
    expected = CLIPS * len(STRIDES) * 2 + CLIPS * 2  # The short video: strides 1 and 2 only.
    assert (report.examples, report.shards_written, report.bad_files) == (expected, 2, 1)
    assert report.too_short == {"frame_stride=4": 1}
    records = _stored(cache)
    assert len(records) == expected == read_index(cache)["num_examples"]
    fps = [float(r["fps"]) for r in records]
    assert collections.Counter(fps) == {NATIVE_FPS / 1: 3 * CLIPS, NATIVE_FPS / 2: 3 * CLIPS, NATIVE_FPS / 4: 2 * CLIPS}
    starts = collections.defaultdict(list)  # (video, stride) -> first frames, in clip order
    for r in records:
        stride = round(NATIVE_FPS / float(r["fps"]))
        frames = SHORT if int(r["label"]) == 2 else LONG
        assert 0 <= int(r["first_frame"]) <= frames - 1 - (FRAMES - 1) * stride
        starts[int(r["label"]), stride].append(int(r["first_frame"]))
    assert len(starts) == 8 and all(len(s) == CLIPS for s in starts.values())
    assert all(s == sorted(set(s)) for s in starts.values()), starts  # Distinct, each in its own part of the video.

    source = LatentShardSource(cache, seed=0)
    assert [float(source[i]["fps"]) for i in range(len(source))] == fps
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    with Loader(source, NamedSharding(mesh, PartitionSpec("data")), global_batch_size=expected, seed=0) as loader:
        batch = next(loader)  # One batch is one (shuffled) epoch.
    assert sorted(np.asarray(batch["fps"]).tolist()) == sorted(fps)

    before = _contents(cache)
    again = prepare(config, str(videos), cache, num_shards=2)
    assert (again.examples, again.shards_skipped, again.shards_written) == (0, 2, 0)
    assert _contents(cache) == before
    other = load_config(CONFIG, overrides + [f"prepare.frame_strides={STRIDES}"], reads_data=False)
    with pytest.raises(ValueError, match="use a new --out folder"):
        prepare(other, str(videos), cache, num_shards=2)


def test_clip_draws_give_distinct_spread_starts_and_depend_only_on_seed_video_and_rate():
    draws = clip_draws(0, "a.mp4|0.0|None", "frame_stride=2", CLIPS)
    assert draws == clip_draws(0, "a.mp4|0.0|None", "frame_stride=2", CLIPS)
    for seed, video, rate in [(1, "a.mp4|0.0|None", "frame_stride=2"), (0, "b.mp4|0.0|None", "frame_stride=2")]:
        assert clip_draws(seed, video, rate, CLIPS) != draws
    assert clip_draws(0, "a.mp4|0.0|None", "frame_stride=4", CLIPS) != draws
    spec = ClipSpec(FRAMES, 16, 16, frame_stride=2)
    for frames in range(7, 40):  # 1 to 27 possible starts; clip k starts in the k-th third of them.
        starts = [clip_times(spec, d, NATIVE_FPS, frames).first_frame for d in draws]
        choices = frames - (FRAMES - 1) * 2
        assert len(set(starts)) == min(CLIPS, choices)
        if choices >= CLIPS:
            assert all(k * choices // CLIPS <= s < (k + 1) * choices // CLIPS for k, s in enumerate(starts))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("clips_per_stride", 0, "'prepare.clips_per_stride': must be an integer >= 1"),
        ("frame_strides", (1, 0), "'prepare.frame_strides': must be integers >= 1"),
        ("frame_strides", (2, 2.5), "'prepare.frame_strides': must be integers >= 1"),
        ("frame_strides", (2, 4, 2), "'prepare.frame_strides': .* repeats a stride"),
    ],
)
def test_check_config_names_the_bad_prepare_key(key, value, message):
    config = default.get_config()
    check_config(config)
    config.prepare[key] = value
    with pytest.raises(ValueError, match=f"^config key {message}"):
        check_config(config)


def test_a_cache_without_clip_fps_reads_with_data_fps(tmp_path):
    mean = np.zeros((FRAMES, LATENT_SIDE, LATENT_SIDE, 4), np.float16)
    record = {"mean": mean, "std": mean, "label": np.int32(0)}
    latents.write_shard(tmp_path / latents.shard_name(0, 1), [record])
    shards = [{"file": latents.shard_name(0, 1), "num_records": 1}]
    latents.write_index(tmp_path, {"shards": shards, "num_examples": 1, "scaling_factor": 0.18215})
    assert float(LatentShardSource(tmp_path, fps=6.0)[0]["fps"]) == 6.0
    with pytest.raises(ValueError, match="stores no clip fps"):
        LatentShardSource(tmp_path)[0]
