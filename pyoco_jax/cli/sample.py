"""`pyoco-sample --workdir DIR [--step N] [--num 4] [--steps 50] [--guidance 3] [--label K | --prompt P] --out F.mp4`.

Samples from any checkpoint of a run, with the config saved in that checkpoint (read on one device,
whatever mesh trained it). Text-to-video models take `--prompt` (classifier-free guidance against the
empty prompt) and decode their latents through the VideoVAE (`vae.video_decoder`) or the image VAE.
`--cascade STAGE_DIR` (repeatable) runs the base's clips through cascade stages in order (temporal
interpolation, super-resolution: `pyoco_jax.sample.cascade`) and writes the last stage's clips; each
stage's own output goes next to --out as <name>.stage<N>.mp4. `--given FILE` (an image or a video) gives
a conditioned run the user's frames (`pyoco_jax.sample.given`: image-to-video, extension, or an interpolation
or super-resolution stage on the user's clip); without it a conditioned run is given real clips of its data.
"""

import numpy as np
from absl import flags, logging

from pyoco_jax.cli.common import absolute, config_overrides, run_cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (local or gs://).", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_NUM = flags.DEFINE_integer("num", 4, "Number of videos.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the config's sample.num_steps).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: the config's).")
_LABEL = flags.DEFINE_integer("label", None, "Class label for every video (default: cycle through classes).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_EMA = flags.DEFINE_bool("ema", True, "Sample with the EMA params (else the raw trained params).")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "Text prompt (text-to-video models); repeat for one video each.")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Output .mp4, local or gs:// (a .gif of the same grid and a .png sheet of every frame go next to it).",
    required=True,
)
_CASCADE = flags.DEFINE_multi_string(
    "cascade", [], "Run directory of a cascade stage (interpolation or super-resolution) after --workdir; repeat."
)
_GIVEN = flags.DEFINE_string(
    "given",
    None,
    "Image or video whose frames a conditioned --workdir run starts from (first/last frames, "
    "keyframes, or a low-res clip, as its condition section says; override it with --config.condition.frames).",
)
_SHAPE_ACCURACY = flags.DEFINE_bool(
    "shape_accuracy",
    False,
    "Synthetic-shapes models: also print the fraction of clips that a classifier, trained on the dataset's "
    "own clips, names as the requested shape, and how much the shapes' colour drifts between frames.",
)


def main() -> None:
    """Overrides (`--config.vae.path=DIR`, e.g. for moved files) apply to the checkpoint's config."""
    from pyoco_jax.evaluate.shape_report import check_shape_model, format_shape_metrics, shape_metrics
    from pyoco_jax.sample.output import write_frame_sheet, write_videos
    from pyoco_jax.sample.run_sampler import load_run_sampler

    run = load_run_sampler(
        absolute(_WORKDIR.value), _STEP.value, ema=_EMA.value, overrides=config_overrides(), num_steps=_STEPS.value
    )
    if _SHAPE_ACCURACY.value:
        check_shape_model(run.config)
    prompts = list(_PROMPT.value)
    num = len(prompts) if len(prompts) > 1 else _NUM.value
    labels = None if _LABEL.value is None else np.full((num,), _LABEL.value, np.int32)
    if _GIVEN.value or _CASCADE.value:
        from pyoco_jax.sample.cascade import continue_cascade
        from pyoco_jax.sample.given import sample_given

        if _GIVEN.value:
            start, labels = sample_given(run, _GIVEN.value, num=num, seed=_SEED.value, labels=labels, prompts=prompts)
        else:
            start, inputs = run.sample(num, seed=_SEED.value, labels=labels, prompts=prompts, pixels=False)
            labels = inputs["labels"]
        stages = [load_run_sampler(absolute(d), ema=_EMA.value, num_steps=_STEPS.value) for d in _CASCADE.value]
        outputs = [run.to_pixels(start)]
        outputs += continue_cascade(run, start, stages, seed=_SEED.value, labels=labels, prompts=prompts)
        shown = list(zip([run, *stages], outputs, strict=True))
    else:
        videos, inputs = run.sample(
            num, seed=_SEED.value, labels=labels, prompts=prompts, guidance_scale=_GUIDANCE.value
        )
        shown, labels = [(run, videos)], inputs["labels"]
    out = absolute(_OUT.value)
    stem, suffix = out.rsplit(".", 1)
    for index, (stage, videos) in enumerate(shown):
        path = out if index == len(shown) - 1 else f"{stem}.stage{index}.{suffix}"
        paths = write_videos(videos, path, stage.config.sample.fps)
        paths.append(write_frame_sheet(videos, paths[0].with_suffix(".png")))
        logging.info("Sampled %d videos from step %d: %s", num, stage.step, ", ".join(map(str, paths)))
        if _SHAPE_ACCURACY.value:
            metrics = shape_metrics(stage.config, videos, labels)
            if len(shown) > 1:
                print(f"stage {index}, {videos.shape[1]} frames at {videos.shape[2]}x{videos.shape[3]}:")
            print(format_shape_metrics(metrics, num, stage.config.model.num_classes))


def run() -> None:
    run_cli("pyoco-sample", main)


if __name__ == "__main__":
    run()
