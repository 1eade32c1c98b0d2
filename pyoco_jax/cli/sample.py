"""`pyoco-sample --workdir DIR [--step N] [--num 4] [--steps 50] [--guidance 3] [--label K | --prompt P] --out F.mp4`.

Samples from any checkpoint of a run, with the config saved in that checkpoint (read on one device,
whatever mesh trained it). Text-to-video models take `--prompt` (classifier-free guidance against the
empty prompt) and decode their latents through the VideoVAE (`vae.video_decoder`) or the image VAE.
"""

import sys

import numpy as np
from absl import app, flags, logging

from pyoco_jax.cli.logs import quiet_library_logs

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (local or gs://).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_NUM = flags.DEFINE_integer("num", 4, "Number of videos.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: the config's sample.num_steps).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: the config's).")
_LABEL = flags.DEFINE_integer("label", None, "Class label for every video (default: cycle through classes).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_EMA = flags.DEFINE_bool("ema", True, "Sample with the EMA params (else the raw trained params).")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "Text prompt (text-to-video models); repeat for one video each.")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Config overrides key=value, e.g. --set vae.path=SD (moved files).")
_OUT = flags.DEFINE_string("out", None, "Output .mp4, local or gs:// (a .gif of the same grid is written next to it).")
_SHAPE_ACCURACY = flags.DEFINE_bool(
    "shape_accuracy",
    False,
    "Synthetic-shapes models: also print the fraction of clips that a classifier, trained on the dataset's "
    "own clips, names as the requested shape, and how much the shapes' colour drifts between frames.",
)


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value or not _OUT.value:
        raise app.UsageError("--workdir and --out are required.")
    from pyoco_jax.config import apply_overrides
    from pyoco_jax.diffusion import make_formulation
    from pyoco_jax.train.latent_io import encode_text, is_latent, make_latent_decoder
    from pyoco_jax.train.sampling import default_labels, make_sampler, sample_videos, write_videos
    from pyoco_jax.train.state import split_model
    from pyoco_jax.train.weights import CheckpointNotFoundError, checkpoint_weights, model_from_weights

    try:
        config, step, weights = checkpoint_weights(_WORKDIR.value, _STEP.value, ema=_EMA.value)
    except CheckpointNotFoundError as err:
        sys.exit(f"pyoco-sample: {err}")
    if _OVERRIDES.value:
        config = apply_overrides(config, _OVERRIDES.value)
    if _SHAPE_ACCURACY.value and (config.data.source != "synthetic" or config.model.num_classes == 0):
        sys.exit("pyoco-sample: --shape_accuracy needs a class-conditional model of the synthetic shapes.")
    if _LABEL.value is not None and not 0 <= _LABEL.value < max(config.model.num_classes, 1):
        sys.exit(f"pyoco-sample: --label must be in [0, {config.model.num_classes}) for this model.")
    prompts = list(_PROMPT.value)
    if prompts and config.model.cross_attention_dim == 0:
        sys.exit("pyoco-sample: this model has no text conditioning (model.cross_attention_dim=0); drop --prompt.")
    num = len(prompts) if len(prompts) > 1 else _NUM.value
    graphdef, params, frozen = split_model(model_from_weights(config, weights), config.optim.trainable)
    sampler = make_sampler(
        graphdef, make_formulation(config.diffusion), config, _STEPS.value or config.sample.num_steps
    )
    labels = None if _LABEL.value is None else np.full((num,), _LABEL.value, np.int32)
    context = null_context = None
    if prompts:
        context, null_context = encode_text(config, prompts * num if len(prompts) == 1 else prompts)
    videos = sample_videos(
        sampler,
        params,
        frozen,
        config,
        seed=_SEED.value,
        num=num,
        labels=labels,
        guidance_scale=_GUIDANCE.value,
        context=context,
        null_context=null_context,
        decode=make_latent_decoder(config) if is_latent(config) else None,
    )
    paths = write_videos(videos, _OUT.value, config.sample.fps)
    logging.info("Sampled %d videos from step %d: %s", num, step, ", ".join(map(str, paths)))
    if _SHAPE_ACCURACY.value:
        _report_shape_metrics(config, videos, default_labels(config, num) if labels is None else labels)


def _report_shape_metrics(config, videos: np.ndarray, labels: np.ndarray) -> None:
    from pyoco_jax.data.loader import make_source
    from pyoco_jax.evaluate.colour_drift import colour_drift
    from pyoco_jax.evaluate.shape_accuracy import shape_accuracy, train_shape_classifier

    source = make_source(config.data, seed=config.seed + 1)
    classifier = train_shape_classifier(source)
    accuracy = shape_accuracy(classifier, videos, labels)
    print(
        f"shape accuracy: {accuracy:.1%} of {len(labels)} clips show the requested shape (chance "
        f"{1 / config.model.num_classes:.0%}; the classifier scores {classifier.held_out_accuracy:.1%} on real frames)"
    )
    real = np.stack([source[i]["video"] for i in range(min(len(source), len(labels)))])
    print(
        f"colour drift: {colour_drift(videos):.3f} (mean RGB distance of a frame's shape colour from its clip's "
        f"average; real clips {colour_drift(real):.3f})"
    )


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
