"""`pyoco-sample --workdir DIR [--step N] [--num 4] [--steps 50] [--guidance 3] [--label K | --prompt P] --out F.mp4`.

Samples from any checkpoint of a run, with the config saved in that checkpoint (read on one device,
whatever mesh trained it). Text-to-video models take `--prompt` (classifier-free guidance against the
empty prompt) and decode their latents through the VideoVAE (`vae.video_decoder`) or the image VAE.
"""

import numpy as np
from absl import flags, logging

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.errors import UserError

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
    "out", None, "Output .mp4, local or gs:// (a .gif of the same grid is written next to it).", required=True
)
_SHAPE_ACCURACY = flags.DEFINE_bool(
    "shape_accuracy",
    False,
    "Synthetic-shapes models: also print the fraction of clips that a classifier, trained on the dataset's "
    "own clips, names as the requested shape, and how much the shapes' colour drifts between frames.",
)


def main() -> None:
    """Overrides (`--config.vae.path=DIR`, e.g. for moved files) apply to the checkpoint's config."""
    from pyoco_jax.config import apply_overrides
    from pyoco_jax.diffusion import make_formulation
    from pyoco_jax.sample.inputs import sampling_inputs
    from pyoco_jax.sample.output import write_videos
    from pyoco_jax.sample.sampler import make_sampler, sample_videos
    from pyoco_jax.train.state import split_model
    from pyoco_jax.train.weights import checkpoint_weights, model_from_weights

    config, step, weights = checkpoint_weights(absolute(_WORKDIR.value), _STEP.value, ema=_EMA.value)
    if config_overrides():
        config = apply_overrides(config, config_overrides())
    if _SHAPE_ACCURACY.value and (config.data.source != "synthetic" or config.model.num_classes == 0):
        raise UserError("--shape_accuracy needs a class-conditional model of the synthetic shapes")
    if _LABEL.value is not None and not 0 <= _LABEL.value < max(config.model.num_classes, 1):
        raise UserError(f"--label must be in [0, {config.model.num_classes}) for this model")
    prompts = list(_PROMPT.value)
    if prompts and config.model.cross_attention_dim == 0:
        raise UserError("this model has no text conditioning (model.cross_attention_dim=0); drop --prompt")
    num = len(prompts) if len(prompts) > 1 else _NUM.value
    graphdef, params, frozen = split_model(model_from_weights(config, weights), config.optim.trainable)
    sampler = make_sampler(
        graphdef, make_formulation(config.diffusion), config, _STEPS.value or config.sample.num_steps
    )
    labels = None if _LABEL.value is None else np.full((num,), _LABEL.value, np.int32)
    inputs = sampling_inputs(config, num, labels=labels, prompts=prompts)
    videos = sample_videos(
        sampler, params, frozen, config, seed=_SEED.value, num=num, guidance_scale=_GUIDANCE.value, **inputs
    )
    paths = write_videos(videos, absolute(_OUT.value), config.sample.fps)
    logging.info("Sampled %d videos from step %d: %s", num, step, ", ".join(map(str, paths)))
    if _SHAPE_ACCURACY.value:
        _report_shape_metrics(config, videos, inputs["labels"])


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
    run_cli("pyoco-sample", main)


if __name__ == "__main__":
    run()
