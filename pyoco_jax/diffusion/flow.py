"""Flow matching (rectified flow, as SD3 and Wan 2.1 train): a straight path from data to noise.

Training: x_t = (1 - t) x0 + t eps for t in [0, 1], the network predicts the velocity v = eps - x0
and sees the time t * timestep_scale (diffusers and Wan feed sigma * 1000).

Sampling reuses the variance-exploding samplers. With sigma = t / (1 - t) the same point is
x = x_t / (1 - t) = x0 + sigma eps, so x_t = x / (1 + sigma), t = sigma / (1 + sigma) and the
denoiser is D(x, sigma) = x_t - t v. Euler on sigma is then exactly Euler on t (x_t' = x_t + (t' - t) v),
and DDIM, DPM-Solver++(2M) and UniPC, data-prediction solvers in lambda = -ln sigma = ln((1 - t) / t),
are exactly their flow-coordinate versions (UniPC's steps are checked against diffusers'); Heun integrates
in t (`ode_time = "flow"`), as diffusers' FlowMatchHeunDiscreteScheduler does. The PYoCo noise is eps in
both training and sampling.

t = 1 is sigma = inf, which VE coordinates cannot hold: the first sampling time is FIRST_TIME, the value
diffusers' UniPCMultistepScheduler moves t = 1 to, so sampling starts from x_t = eps (x = eps / (1 - t))
with every coefficient finite. Euler's first step then differs from one that starts at t = 1 exactly by
(1 - FIRST_TIME) |v| ~ 1e-6.

The network's time input is 1000 t by default. diffusers' UniPCMultistepScheduler (flow sigmas), like Wan's own
sampler, feeds it whole numbers, floor(1000 t) taken of its float64 times, while its update keeps the exact
float32 times: `timestep_rounding = "floor"` does the same, so a Wan checkpoint samples as WanPipeline does.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from pyoco_jax.diffusion.formulation import Formulation, ModelFn, mean_per_example, per_example
from pyoco_jax.diffusion.samplers import Denoiser
from pyoco_jax.diffusion.schedules import FLOW_GRIDS, flow_times, shift_flow_time

TIME_SAMPLINGS = ("uniform", "logit_normal")
LOSS_WEIGHTINGS = ("none", "cosmap")
TIMESTEP_ROUNDINGS = ("none", "floor")

START_OFFSET = 1e-6
"""What diffusers' UniPC takes off t = 1, in float64, before it takes its timesteps from the times."""
FIRST_TIME = float(np.float32(1.0 - START_OFFSET))
"""1 - 1.0133e-6: the float32 value diffusers' UniPC keeps of 1 - START_OFFSET; UniPC's second step
depends on this value through ln(1 - t), so it is matched to the bit."""


@dataclasses.dataclass(frozen=True)
class FlowMatching(Formulation):
    """Velocity prediction on the straight path x_t = (1 - t) x0 + t eps, sampled through D(x, sigma)."""

    time_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    loss_weighting: str = "none"
    timestep_scale: float = 1000.0
    grid: str = "euler"
    num_train_timesteps: int = 1000
    sample_shift: float = -1.0
    timestep_rounding: str = "none"

    ode_time: ClassVar[str] = "flow"

    def __post_init__(self):
        for key, value, choices in (
            ("time_sampling", self.time_sampling, TIME_SAMPLINGS),
            ("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS),
            ("grid", self.grid, FLOW_GRIDS),
            ("timestep_rounding", self.timestep_rounding, TIMESTEP_ROUNDINGS),
        ):
            if value not in choices:
                raise ValueError(f"config key 'diffusion.flow.{key}': {value!r} is not one of {choices}")
        for key in ("logit_std", "shift", "timestep_scale", "num_train_timesteps"):
            if not getattr(self, key) > 0:
                raise ValueError(f"config key 'diffusion.flow.{key}': must be > 0, got {getattr(self, key)}")
        if not (self.sample_shift > 0 or self.sample_shift == -1):
            raise ValueError(
                f"config key 'diffusion.flow.sample_shift': must be > 0, or -1 for diffusion.flow.shift; "
                f"got {self.sample_shift}"
            )

    @property
    def sampling_shift(self) -> float:
        """The sampling grid's shift: sample_shift, or the training shift where that is -1."""
        return self.shift if self.sample_shift == -1 else self.sample_shift

    def add_noise(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        """x_t = (1 - t) x0 + t noise with one time per example (B,)."""
        t = per_example(jnp.asarray(t, jnp.float32), x0)
        return (1.0 - t) * x0 + t * noise

    def target(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        """The velocity d x_t / dt = noise - x0 the network is trained to output."""
        return noise - x0

    def loss_weight(self, t: jax.Array) -> jax.Array:
        """none: 1 | cosmap: 2 / (pi (1 - 2t + 2t^2)), the density of SD3's CosMap times (Esser et al. 2024).

        cosmap is that density applied as a weight, as diffusers' `compute_loss_weighting_for_sd3`
        does; it lies in [2/pi, 4/pi], largest at t = 1/2.
        """
        t = jnp.asarray(t, jnp.float32)
        if self.loss_weighting == "cosmap":
            return 2.0 / (jnp.pi * (1.0 - 2.0 * t + 2.0 * t**2))
        return jnp.ones_like(t)

    def draw_level(self, key: jax.Array) -> jax.Array:
        """One training time: uniform on [0, 1), or sigmoid of N(logit_mean, logit_std^2) (SD3), then shifted."""
        if self.time_sampling == "uniform":
            t = jax.random.uniform(key, (), jnp.float32)
        else:
            t = jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(key, (), jnp.float32))
        return shift_flow_time(t, self.shift)

    def loss_terms(
        self, model_fn: ModelFn, x0: jax.Array, noise: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        time = jnp.asarray(t, jnp.float32) * self.timestep_scale
        raw = model_fn(self.add_noise(x0, noise, t), time).astype(jnp.float32)
        per_example_loss = self.loss_weight(t) * mean_per_example((raw - self.target(x0, noise)) ** 2)
        return per_example_loss, time

    def denoise(self, model_fn: ModelFn, x: jax.Array, sigma: jax.Array) -> jax.Array:
        sigma = jnp.asarray(sigma, jnp.float32)
        return self._denoise_at(model_fn, x, sigma, self._model_time(sigma))

    def _model_time(self, sigma: jax.Array) -> jax.Array:
        """t * timestep_scale at t = sigma / (1 + sigma) in float32, floored if so configured."""
        time = sigma * (1.0 / (1.0 + sigma)) * self.timestep_scale
        return jnp.floor(time) if self.timestep_rounding == "floor" else time

    def _denoise_at(self, model_fn: ModelFn, x: jax.Array, sigma: jax.Array, time: jax.Array) -> jax.Array:
        """D(x, sigma) from the velocity the network gives at the time input `time` (B,)."""
        one_minus_t = 1.0 / (1.0 + sigma)
        t = sigma * one_minus_t
        x_t = per_example(one_minus_t, x) * x
        velocity = model_fn(x_t, time).astype(jnp.float32)
        return x_t - per_example(t, x) * velocity

    def sampling_denoiser(self, model_fn: ModelFn, num_steps: int) -> Denoiser:
        """D on the `num_steps` grid; with floor rounding its levels get diffusers' `integer_timesteps`.

        Floored in float32 from sigma, some levels land one off diffusers' (shift 1, 9 steps: its 444.99999 in
        float64 is 445.0 in float32), so the levels' times are looked up; a sigma off the grid (Euler/Heun churn)
        gets the float32 floor.
        """
        if self.timestep_rounding == "none":
            return super().sampling_denoiser(model_fn, num_steps)
        levels = jnp.asarray(self.sampling_sigmas(num_steps)[:-1], jnp.float32)
        timesteps = jnp.asarray(self.integer_timesteps(num_steps), jnp.float32)

        def denoise(x: jax.Array, sigma: jax.Array) -> jax.Array:
            sigma = jnp.asarray(sigma, jnp.float32)
            at_level = sigma[:, None] == levels  # The samplers pass the grid's float32 values exactly.
            looked_up = timesteps[jnp.argmax(at_level, axis=-1)]
            time = jnp.where(jnp.any(at_level, axis=-1), looked_up, self._model_time(sigma))
            return self._denoise_at(model_fn, x, sigma, time)

        return denoise

    def integer_timesteps(self, num_steps: int) -> np.ndarray:
        """floor(t * timestep_scale) at the grid's levels, as UniPCMultistepScheduler.timesteps: from the float64
        times, the first 1 - START_OFFSET."""
        times = flow_times(num_steps, self.sampling_shift, self.num_train_timesteps, self.grid)[:-1]
        times[0] = min(times[0], 1.0 - START_OFFSET)
        return np.floor(times * self.timestep_scale).astype(np.int64)

    def sampling_sigmas(self, num_steps: int) -> np.ndarray:
        """sigma = t / (1 - t) on the `grid` flow times, the first (t = 1) moved to FIRST_TIME."""
        times = flow_times(num_steps, self.sampling_shift, self.num_train_timesteps, self.grid)
        times[0] = min(times[0], FIRST_TIME)
        return times / (1.0 - times)

    def initial_noise_scale(self, sigma_max: float) -> float:
        """1 + sigma_max = 1 / (1 - t): the VE point of x_t = eps, pure noise."""
        return 1.0 + sigma_max
