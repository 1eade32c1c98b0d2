"""Sampling from a saved run: its checkpoint's weights and config and one jitted sampler, shared by
`pyoco-sample` and `pyoco-eval` (which samples hundreds of clips in chunks of one compiled size)."""

import dataclasses
import functools
from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.conditioning import is_conditioned
from pyoco_jax.config import apply_overrides
from pyoco_jax.diffusion import make_formulation
from pyoco_jax.errors import UserError
from pyoco_jax.models.lora import trainable_pattern
from pyoco_jax.sample.decode import is_latent, make_latent_decoder, make_latent_encoder
from pyoco_jax.sample.inputs import sampling_inputs
from pyoco_jax.sample.sampler import make_sampler, sample_model_space
from pyoco_jax.train.state import split_model
from pyoco_jax.train.weights import checkpoint_weights, model_from_weights
from pyoco_jax.video_range import to_uint8, video_to_model_range


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
        pixels: bool = True,
    ) -> tuple[np.ndarray, dict]:
        """(uint8 videos (num, F, H, W, C), the inputs they were conditioned on) from seed `seed`.

        A conditioned model (cascade stage, image-to-video) is given `condition_clips` (num, F, H, W, C) in
        its own space (uint8 or [-1, 1] pixels, or scaled latents; default: real clips of the run's data).
        `pixels` False returns the videos in the model's space (float; latents stay undecoded).
        """
        if labels is not None and not np.all((0 <= labels) & (labels < max(self.config.model.num_classes, 1))):
            raise UserError(f"labels must be in [0, {self.config.model.num_classes}) for this model")
        if prompts and self.config.model.cross_attention_dim == 0:
            raise UserError("this model has no text conditioning (model.cross_attention_dim=0); drop the prompts")
        if condition_clips is not None and not is_conditioned(self.config):
            raise UserError("this model takes no condition (its config's condition section is empty)")
        inputs = sampling_inputs(self.config, num, labels=labels, prompts=prompts, condition_clips=condition_clips)
        videos = sample_model_space(
            self.sampler, self.params, self.frozen, self.config, seed=seed, num=num, guidance_scale=guidance_scale,
            **inputs,
        )  # fmt: skip
        return (self.to_pixels(videos) if pixels else np.asarray(videos)), inputs

    @functools.cached_property
    def is_latent(self) -> bool:
        return is_latent(self.config)

    @functools.cached_property
    def _decode(self):
        return make_latent_decoder(self.config)

    @functools.cached_property
    def _encoder(self):
        return make_latent_encoder(self.config)

    @property
    def pixel_side(self) -> int:
        """Side of the frames the model's frames show: its resolution, times the VAE's factor if latent."""
        return self.config.data.resolution * (self._encoder[1] if self.is_latent else 1)

    def to_pixels(self, videos: np.ndarray) -> np.ndarray:
        """Videos in the model's space -> uint8 pixels (decoded for a latent model)."""
        videos = jnp.asarray(videos, jnp.float32)
        return to_uint8(self._decode(videos) if self.is_latent else videos)

    def from_pixels(self, videos: np.ndarray) -> np.ndarray:
        """uint8 pixels (N, F, H, W, C) -> the model's space: [-1, 1] floats, or scaled latents (posterior mean)."""
        videos = video_to_model_range(jnp.asarray(videos))
        return np.asarray(self._encoder[0](videos) if self.is_latent else videos)


def load_run_sampler(
    workdir: str, step: int | None = None, *, ema: bool = True, overrides: Sequence[str] = (), num_steps=None
) -> RunSampler:
    """The sampler of the checkpoint at `step` (default: the latest) of the run in `workdir`, read on one device."""
    config, step, weights = checkpoint_weights(workdir, step, ema=ema)
    if overrides:
        config = apply_overrides(config, overrides)
    graphdef, params, frozen = split_model(model_from_weights(config, weights), trainable_pattern(config))
    sampler = make_sampler(graphdef, make_formulation(config.diffusion), config, num_steps or config.sample.num_steps)
    return RunSampler(config, step, sampler, params, frozen)
