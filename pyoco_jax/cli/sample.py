"""`pyoco-sample --workdir DIR [--step N] [--num 4] [--steps 50] [--guidance 3] [--label K] --out FILE.mp4`.

Samples from any checkpoint of a run, with the config saved in that checkpoint.
"""

import sys

import jax
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
_OUT = flags.DEFINE_string("out", None, "Output .mp4, local or gs:// (a .gif of the same grid is written next to it).")


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value or not _OUT.value:
        raise app.UsageError("--workdir and --out are required.")
    from pyoco_jax import parallel
    from pyoco_jax.config import validate
    from pyoco_jax.train.build import build_run
    from pyoco_jax.train.checkpoint import Checkpointer, abstract_like
    from pyoco_jax.train.sampling import make_sampler, sample_videos, write_videos

    checkpointer = Checkpointer(_WORKDIR.value)
    step = checkpointer.latest_step() if _STEP.value is None else _STEP.value
    if step is None or step not in checkpointer.all_steps():
        sys.exit(f"pyoco-sample: no checkpoint {'' if step is None else step} in {checkpointer.directory}; "
                 f"available steps: {checkpointer.all_steps()}")
    config = validate(checkpointer.restore_config(step))
    if _LABEL.value is not None and not 0 <= _LABEL.value < max(config.model.num_classes, 1):
        sys.exit(f"pyoco-sample: --label must be in [0, {config.model.num_classes}) for this model.")
    parts = build_run(config)
    mesh = parallel.make_mesh(config.mesh)
    sharding = jax.tree.map(lambda _: parallel.replicated(mesh), parts.abstract_state)
    state, _ = checkpointer.restore(step, abstract_like(parts.abstract_state, sharding))
    checkpointer.close()
    sampler = make_sampler(parts.graphdef, parts.formulation, config, _STEPS.value or config.sample.num_steps)
    labels = None if _LABEL.value is None else np.full((_NUM.value,), _LABEL.value, np.int32)
    videos = sample_videos(
        sampler,
        state.ema if _EMA.value else state.params,
        state.frozen,
        config,
        seed=_SEED.value,
        num=_NUM.value,
        labels=labels,
        guidance_scale=_GUIDANCE.value,
    )
    paths = write_videos(videos, _OUT.value, config.sample.fps)
    logging.info("Sampled %d videos from step %d: %s", _NUM.value, step, ", ".join(map(str, paths)))


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
