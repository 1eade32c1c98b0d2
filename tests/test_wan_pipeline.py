"""The Wan 2.1 path end to end, on a tiny random diffusers WanPipeline made here (no download).

pipeline -> pyoco-convert (one Orbax checkpoint) ; videos + captions -> pyoco-prepare (Wan VAE latents normalised
per channel, UMT5 context) -> pyoco-train (LoRA on the converted DiT) -> pyoco-sample --prompt -> an mp4 ->
pyoco-export -> `WanPipeline.from_pretrained(export)`. The strongest check: from the same initial noise, prompt,
guidance and step count, WanPipeline on the export gives our sampler's latents and decoded video, which needs the
UMT5 encoder, the LoRA-merged DiT, the UniPC flow scheduler with guidance and the Wan VAE decode all to agree.

diffusers' UniPC (like Wan's own sampler) feeds the transformer int64 timesteps, floor(1000 t); the Wan configs
do too (diffusion.flow.timestep_rounding=floor), so the reference is WanPipeline as it is. Our sample with the
float 1000 t (rounding none) is compared as well, to show the check resolves that rounding.

Subprocesses share the session's compilation cache, so our in-test sample reuses pyoco-sample's compiled programs.
"""

import json
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import torch
import transformers
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from grain.sources import ArrayRecordDataSource

from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.convert.families import SD, WAN, pipeline_family, text_family, vae_family
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.convert.pipeline import convert_pipeline
from pyoco_jax.convert.umt5 import load_umt5_params
from pyoco_jax.convert.wan_transformer import read_wan_params
from pyoco_jax.convert.wan_vae import load_wan_vae, load_wan_vae_params
from pyoco_jax.convert.weight_files import read_safetensors
from pyoco_jax.data import latents
from pyoco_jax.data.video_io import read_video
from pyoco_jax.noise import sample_noise
from pyoco_jax.sample.latent_vae import LatentVAE
from pyoco_jax.sample.sampler import sampling_prior
from tests.data.videos import CAPTIONS, write_captioned_videos
from tests.models.test_umt5 import CONFIG as UMT5_CONFIG
from tests.models.test_umt5 import _t5_like_tokenizer
from tests.models.test_wan_vae import TINY as TINY_VAE
from tests.train.helpers import REPO, single_device_env

CONFIG = str(REPO / "configs" / "wan21_tiny.py")
LATENT_FRAMES, LATENT_SIDE, CHANNELS = 2, 4, 4
FRAMES, SIDE = 1 + 4 * (LATENT_FRAMES - 1), 8 * LATENT_SIDE  # The tiny VAE is Wan's 4x / 8x.
TINY_DIT = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=CHANNELS,
    out_channels=CHANNELS,
    text_dim=UMT5_CONFIG["d_model"],
    freq_dim=16,
    ffn_dim=48,
    num_layers=2,
)
FLOW_SHIFT, GUIDANCE, STEPS, PROMPT = 3.0, 4.0, 3, CAPTIONS[0]
TOLERANCE = 1e-4  # Relative to the largest magnitude; both sides float32, measured ~2e-6.
TRAIN = [
    "--config.model.lora.rank=4",
    "--config.optim.learning_rate=0.01",  # Adapters well away from zero in 2 steps, so their merge is tested.
    "--config.optim.ema_decay=0.0",  # EMA = params: what pyoco-sample and pyoco-export --ema read.
    "--config.train.num_steps=2",
]


def _moved(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """`module` with every weight moved off its init (zero-init parts then matter)."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(scale * torch.randn_like(param))
    return module.eval()


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """transformer/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json of a random tiny Wan 2.1."""
    folder = tmp_path_factory.mktemp("wan") / "pipeline"
    torch.manual_seed(0)
    tokenizer_folder = folder.parent / "tokenizer_source"
    tokenizer_folder.mkdir()
    _t5_like_tokenizer().save(str(tokenizer_folder / "tokenizer.json"))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    settings = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512, **special}
    (tokenizer_folder / "tokenizer_config.json").write_text(json.dumps(settings))
    WanPipeline(
        tokenizer=transformers.AutoTokenizer.from_pretrained(tokenizer_folder),
        text_encoder=_moved(transformers.UMT5EncoderModel(transformers.UMT5Config(**UMT5_CONFIG))),
        vae=_moved(AutoencoderKLWan(**TINY_VAE)),
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT
        ),
        transformer=_moved(WanTransformer3DModel(**TINY_DIT)),
    ).save_pretrained(folder)
    return folder


def _run(module: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env=single_device_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# Our sample of the run, in a fresh single-device process: pyoco-sample compiled these programs already.
OURS = """
import sys
import numpy as np
from pyoco_jax.sample.decode import make_latent_decoder
from pyoco_jax.sample.run_sampler import load_run_sampler
workdir, steps, prompt, guidance, out = sys.argv[1:]
options = dict(seed=0, prompts=[prompt], guidance_scale=float(guidance), pixels=False)
run = load_run_sampler(workdir, num_steps=int(steps))
latents, _ = run.sample(1, **options)
unrounded = load_run_sampler(workdir, num_steps=int(steps), overrides=["diffusion.flow.timestep_rounding=none"])
float_latents, _ = unrounded.sample(1, **options)
np.savez(out, latents=latents, pixels=np.asarray(make_latent_decoder(run.config)(latents)), float_latents=float_latents)
"""


@pytest.mark.slow
def test_convert_prepare_train_sample_and_export_match_wan_pipeline(tmp_path, wan):
    videos, converted, cache, workdir = (tmp_path / name for name in ("videos", "pipe", "latents", "run"))
    times, begin = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal begin
        times[stage] = round(time.perf_counter() - begin, 1)
        begin = time.perf_counter()

    write_captioned_videos(videos)
    assert (pipeline_family(wan), vae_family(wan), text_family(wan)) == (WAN, WAN, WAN)
    lap("videos")

    printed = _run("pyoco_jax.cli.convert", f"--diffusers={wan}", f"--config={CONFIG}", f"--out={converted}")
    assert f"transformer: {len(read_wan_params(wan)[1])} tensors" in printed and ", new" not in printed
    assert (vae_family(converted), text_family(converted)) == (WAN, WAN)  # Its config files say so too.
    for read in (read_wan_params, load_wan_vae_params, load_umt5_params):
        assert _same(read(converted)[1], read(wan)[1]), read.__name__
    lap("convert")

    paths = [f"--config.vae.path={converted}", f"--config.text.path={converted}"]
    _run("pyoco_jax.cli.prepare", f"--config={CONFIG}", *paths, f"--videos={videos}", f"--out={cache}")
    index = latents.read_index(cache)
    assert index["latent_shape"] == [LATENT_FRAMES, LATENT_SIDE, LATENT_SIDE, CHANNELS]
    assert index["context_shape"] == [512, UMT5_CONFIG["d_model"]] and index["num_examples"] == len(CAPTIONS)
    assert (index["scaling_factor"], index["shift_factor"]) == (1.0, 0.0)  # Normalised per channel already.
    lap("prepare")

    reference = WanPipeline.from_pretrained(wan)
    records = ArrayRecordDataSource([str(cache / shard["file"]) for shard in index["shards"]])
    stored = [latents.decode_record(records[i])["context"] for i in range(len(records))]
    stored.append(np.load(cache / latents.NULL_CONTEXT_NAME))
    with torch.no_grad():  # WanPipeline's own text context: UMT5, cut to each prompt's tokens, zero padded.
        want = reference.encode_prompt([*CAPTIONS, ""], do_classifier_free_guidance=False, max_sequence_length=512)
    assert _relative_error(np.stack(stored).astype(np.float32), want[0].numpy()) < 2e-3  # Stored in float16.
    lap("check cache")

    run_paths = [f"--config.data.path={cache}", f"--config.train.init_from={converted}", *paths]
    _run("pyoco_jax.cli.train", f"--config={CONFIG}", f"--workdir={workdir}", *run_paths, *TRAIN)
    assert (workdir / "checkpoints" / "2").exists()
    lap("train")

    sample = ["--num=1", f"--steps={STEPS}", f"--guidance={GUIDANCE}", f"--prompt={PROMPT}"]
    _run("pyoco_jax.cli.sample", f"--workdir={workdir}", *sample, f"--out={tmp_path / 'cat.mp4'}")
    frames, _ = read_video(tmp_path / "cat.mp4")
    assert frames.shape == (FRAMES, SIDE, SIDE, 3)
    lap("sample")

    export = tmp_path / "export"
    _run("pyoco_jax.cli.export", f"--workdir={workdir}", "--ema", f"--out={export}")
    merged = read_safetensors(export / "transformer" / "diffusion_pytorch_model.safetensors")
    base = read_safetensors(wan / "transformer" / "diffusion_pytorch_model.safetensors")
    moved = [name for name in base if not np.array_equal(merged[name], base[name])]
    assert moved and all(".attn" in name for name in moved), moved  # Only the LoRA targets changed.
    lap("export")

    ours = tmp_path / "ours.npz"
    result = subprocess.run(
        [sys.executable, "-c", OURS, str(workdir), str(STEPS), PROMPT, str(GUIDANCE), str(ours)],
        env=single_device_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ours = np.load(ours)
    lap("our sample")

    pipe = WanPipeline.from_pretrained(export)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler) and pipe.scheduler.config.flow_shift == FLOW_SHIFT
    config = load_config(CONFIG, reads_data=False)
    prior, alpha = sampling_prior(config.noise)  # Our sampler's first draw from seed 0.
    noise = sample_noise(jax.random.split(jax.random.PRNGKey(0))[0], ours["latents"].shape, prior, alpha, 1)
    start = torch.from_numpy(np.asarray(noise).transpose(0, 4, 1, 2, 3).copy())
    kwargs = dict(height=SIDE, width=SIDE, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    channels_last = lambda x: x.numpy().transpose(0, 2, 3, 4, 1)
    with torch.no_grad():
        their_latents = pipe(PROMPT, latents=start, output_type="latent", **kwargs).frames
        their_video = pipe(PROMPT, latents=start, output_type="np", **kwargs).frames  # [0, 1]
    errors = {
        "latents": _relative_error(ours["latents"], channels_last(their_latents)),
        "video": _relative_error((ours["pixels"] + 1) / 2, their_video),
    }
    float_error = _relative_error(ours["float_latents"], channels_last(their_latents))
    lap("WanPipeline")
    print(f"our sample vs WanPipeline on the export: max errors relative to the largest value {errors}")
    print(f"ours with float timesteps (rounding none): {float_error:.2e}; stage times (s): {times}")
    assert max(errors.values()) < TOLERANCE, errors
    assert float_error > 100 * TOLERANCE  # The comparison resolves even a timestep's rounding.
    assert their_video.shape == (1, FRAMES, SIDE, SIDE, 3) and their_video.std() > 0.05  # Not a flat video.


def test_wan_latents_are_normalised_as_wan_pipeline_does(tmp_path):
    """The cache's posterior (mean, std) is AutoencoderKLWan's, normalised as WanPipeline does: (z - mean) / std."""
    torch.manual_seed(1)
    reference = _moved(AutoencoderKLWan(**TINY_VAE))
    reference.save_pretrained(tmp_path)
    video = np.random.default_rng(0).uniform(-1, 1, (1, FRAMES, 16, 16, 3)).astype(np.float32)
    mean, std = (np.asarray(a) for a in LatentVAE(load_wan_vae(tmp_path)).posterior_fn()(video))
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(video.transpose(0, 4, 1, 2, 3).copy())).latent_dist
    shape = (1, -1, 1, 1, 1)
    scale = 1.0 / torch.tensor(TINY_VAE["latents_std"]).view(shape)  # WanPipeline's latents_std.
    want_mean = (posterior.mean - torch.tensor(TINY_VAE["latents_mean"]).view(shape)) * scale
    want_std = posterior.std * scale
    for ours, theirs in ((mean, want_mean), (std, want_std)):
        assert _relative_error(ours, theirs.numpy().transpose(0, 2, 3, 4, 1)) < TOLERANCE


def test_families_are_read_from_the_folders(tmp_path):
    """SD folders read as SD; a Wan image-to-video pipeline is refused by name."""
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    assert pipeline_family(tmp_path / "sd") == SD
    (tmp_path / "i2v").mkdir()
    (tmp_path / "i2v" / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    with pytest.raises(ValueError, match="holds a WanImageToVideoPipeline; only text-to-video WanPipeline"):
        pipeline_family(tmp_path / "i2v")


def test_convert_refuses_a_dit_that_is_not_the_folders_and_a_partial_folder(tmp_path, wan):
    """Both before anything is written."""
    other = load_config(CONFIG, ["model.dit.num_layers=3"], reads_data=False)
    with pytest.raises(ConfigError, match=r"^config key 'model.dit': .*num_layers 3 \(the folder: 2\)"):
        convert_pipeline(wan, other, tmp_path / "out")
    partial = tmp_path / "partial"
    shutil.copytree(wan, partial, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(ConversionError, match="is not a whole Wan pipeline folder: no tokenizer/"):
        convert_pipeline(partial, load_config(CONFIG, reads_data=False), tmp_path / "out")
    assert not (tmp_path / "out").exists()
