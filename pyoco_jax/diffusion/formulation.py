"""The interface every diffusion formulation implements, and the training loss and sampling built on it.

A formulation says how data is noised for training and how the raw network
output becomes a denoiser D(x, sigma) in variance-exploding coordinates
(x = x0 + sigma * noise). Training draws one noise level per video and the
noise from the PYoCo prior; sampling integrates with D from the same prior's
noise, so any sampler runs with any formulation.
"""

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from pyoco_jax.diffusion.samplers import SAMPLERS, Denoiser, run_sampler
from pyoco_jax.noise import sample_noise

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
"""model_fn(x_in, t) -> raw network output; t is a float array of shape (B,)."""


def per_example(values: jax.Array, like: jax.Array) -> jax.Array:
    """Reshapes a (B,) array so it broadcasts against `like` of shape (B, ...)."""
    return jnp.reshape(values, values.shape + (1,) * (like.ndim - values.ndim))


def mean_per_example(values: jax.Array) -> jax.Array:
    """Mean over every axis but the batch axis."""
    return jnp.mean(values, axis=tuple(range(1, values.ndim)))


class Formulation(abc.ABC):
    """A diffusion formulation: training loss and sampling over a VE-coordinate denoiser."""

    ode_time: ClassVar[str] = "sigma"
    """The time Heun's sampler integrates in (`samplers.ODE_TIMES`): the one the formulation's paths are straight in."""

    @abc.abstractmethod
    def denoise(self, model_fn: ModelFn, x: jax.Array, sigma: jax.Array) -> jax.Array:
        """D(x, sigma): the float32 estimate of x0 from x = x0 + sigma * noise, sigma of shape (B,)."""

    @abc.abstractmethod
    def sampling_sigmas(self, num_steps: int) -> np.ndarray:
        """The decreasing sampling grid: num_steps noise levels, then 0."""

    def sampling_denoiser(self, model_fn: ModelFn, num_steps: int) -> Denoiser:
        """D(x, sigma) as the samplers call it on the `num_steps` grid: `denoise`, unless the time input a
        formulation gives the network at the grid's levels is set by the grid itself (flow's integer timesteps)."""
        return lambda x, sigma: self.denoise(model_fn, x, sigma)

    @abc.abstractmethod
    def initial_noise_scale(self, sigma_max: float) -> float:
        """Standard deviation of the initial noise at the first sampling level sigma_max."""

    @abc.abstractmethod
    def draw_level(self, key: jax.Array) -> jax.Array:
        """One example's training noise level (sigma or timestep) from its own key."""

    @abc.abstractmethod
    def loss_terms(
        self, model_fn: ModelFn, x0: jax.Array, noise: jax.Array, level: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Per-example float32 losses (B,) and the model's time input t (B,), given x0, noise and levels (B,)."""

    def loss(
        self,
        model_fn: ModelFn,
        x0: jax.Array,
        keys: jax.Array,
        *,
        prior: str = "iid",
        alpha: float = 1.0,
        frame_axis: int = 1,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The training loss for a batch of videos x0 (B, F, H, W, C), computed in float32.

        `keys` holds one PRNG key per video (e.g. `jax.random.split(key, B)`); each
        video's noise level and noise depend on its key alone, so a batch's loss is
        the same however it is split over devices or micro-batches. The noise follows
        the PYoCo `prior` along `frame_axis` (not the batch axis). Returns the scalar
        loss and {"per_example_loss", "t"} for logging.
        """
        x0 = jnp.asarray(x0, jnp.float32)
        axis = frame_axis % x0.ndim
        if axis == 0:
            raise ValueError("frame_axis cannot be the batch axis 0; frames are axis 1 of (B, F, H, W, C).")
        if keys.shape[0] != x0.shape[0]:
            raise ValueError(f"need one key per video: got {keys.shape[0]} keys for a batch of {x0.shape[0]}.")
        level_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        noise = jax.vmap(lambda k: sample_noise(k, x0.shape[1:], prior, alpha, axis - 1))(noise_keys)
        levels = jax.vmap(self.draw_level)(level_keys)
        per_example_loss, t = self.loss_terms(model_fn, x0, noise, levels)
        return jnp.mean(per_example_loss), {"per_example_loss": per_example_loss, "t": t}

    def sample(
        self,
        model_fn: ModelFn,
        key: jax.Array,
        shape: tuple[int, ...],
        *,
        sampler: str,
        num_steps: int,
        prior: str = "iid",
        alpha: float = 1.0,
        eta: float = 0.0,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        unipc_order: int = 2,
        frame_axis: int = 1,
    ) -> jax.Array:
        """Draws float32 samples of `shape` with `sampler` in `num_steps` steps; jit-able as a whole.

        The PYoCo `prior` shapes both the initial noise and the noise that
        stochastic samplers inject (DDIM eta > 0, Euler/Heun churn), matching the
        noise the model was trained on. All keyword options are static.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r} is not one of {SAMPLERS}; set sample.sampler accordingly.")
        shape = tuple(shape)
        sigmas = self.sampling_sigmas(num_steps)
        init_key, loop_key = jax.random.split(key)

        def noise_fn(noise_key: jax.Array) -> jax.Array:
            return sample_noise(noise_key, shape, prior, alpha, frame_axis)

        x = noise_fn(init_key) * self.initial_noise_scale(float(sigmas[0]))
        return run_sampler(
            sampler,
            self.sampling_denoiser(model_fn, num_steps),
            x,
            sigmas,
            key=loop_key,
            noise_fn=noise_fn,
            eta=eta,
            s_churn=s_churn,
            s_tmin=s_tmin,
            s_tmax=s_tmax,
            s_noise=s_noise,
            unipc_order=unipc_order,
            ode_time=self.ode_time,
        )
