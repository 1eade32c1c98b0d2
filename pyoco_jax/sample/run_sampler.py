"""Sampling from a saved run: its checkpoint's weights and config and one jitted sampler, shared by
`pyoco-sample` and `pyoco-eval` (which samples hundreds of clips in chunks of one compiled size)."""

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.conditioning import is_conditioned
from pyoco_jax.config import apply_overrides
from pyoco_jax.diffusion import make_formulation
from pyoco_jax.errors import UserError
from pyoco_jax.sample.inputs import sampling_inputs
from pyoco_jax.sample.sampler import make_sampler, sample_videos
from pyoco_jax.train.state import split_model
from pyoco_jax.train.weights import checkpoint_weights, model_from_weights


@dataclasses.dataclass
class RunSampler:
    config: ml_collections.ConfigDict
    step: int
    sampler: object
    params: nnx.State
    frozen: nnx.State

    def sample(
        self,
        num: int,
        *,
        seed: int,
        labels: np.ndarray | None = None,
        prompts: Sequence[str] = (),
        guidance_scale: float | None = None,
        condition_clips: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict]:
        """(uint8 videos (num, F, H, W, C), the inputs they were conditioned on) from seed `seed`.

        A conditioned model (cascade stage, image-to-video) is given `condition_clips` (num, F, H, W, C) as
        `sample.inputs.condition_inputs` reads them (default: real clips of the run's data).
        """
        if labels is not None and not np.all((0 <= labels) & (labels < max(self.config.model.num_classes, 1))):
            raise UserError(f"labels must be in [0, {self.config.model.num_classes}) for this model")
        if prompts and self.config.model.cross_attention_dim == 0:
            raise UserError("this model has no text conditioning (model.cross_attention_dim=0); drop the prompts")
        if condition_clips is not None and not is_conditioned(self.config):
            raise UserError("this model takes no condition (its config's condition section is empty)")
        inputs = sampling_inputs(self.config, num, labels=labels, prompts=prompts, condition_clips=condition_clips)
        videos = sample_videos(
            self.sampler,
            self.params,
            self.frozen,
            self.config,
            seed=seed,
            num=num,
            guidance_scale=guidance_scale,
            **inputs,
        )
        return videos, inputs


def load_run_sampler(
    workdir: str, step: int | None = None, *, ema: bool = True, overrides: Sequence[str] = (), num_steps=None
) -> RunSampler:
    """The sampler of the checkpoint at `step` (default: the latest) of the run in `workdir`, read on one device."""
    config, step, weights = checkpoint_weights(workdir, step, ema=ema)
    if overrides:
        config = apply_overrides(config, overrides)
    graphdef, params, frozen = split_model(model_from_weights(config, weights), config.optim.trainable)
    sampler = make_sampler(graphdef, make_formulation(config.diffusion), config, num_steps or config.sample.num_steps)
    return RunSampler(config, step, sampler, params, frozen)
