"""DDPM / latent diffusion (Stable Diffusion, MagicVideo): discrete timesteps, VP noising.

Training follows the discrete formulation (x_t = sqrt(abar_t) x0 + sqrt(1-abar_t)
noise, integer t). For sampling the same model is viewed in VE coordinates through
the VP -> EDM bridge (`vp_bridge`): x_ve = x_t / sqrt(abar_t) with sigma =
sqrt((1-abar)/abar), the timestep fed to the network interpolated from sigma in log
space (as diffusers' Euler scheduler does), so EDM-style samplers apply unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np

from pyoco_jax.diffusion.formulation import Formulation, ModelFn, mean_per_example, per_example
from pyoco_jax.diffusion.schedules import ddpm_alphas_cumprod, trailing_timesteps
from pyoco_jax.diffusion.vp_bridge import VPSchedule, vp_preconditioning

PREDICTIONS = ("epsilon", "v", "x0")


class DDPM(Formulation):
    """Discrete-time diffusion with epsilon / v / x0 prediction and optional min-SNR weighting."""

    def __init__(
        self,
        schedule: str = "scaled_linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        prediction: str = "epsilon",
        zero_terminal_snr: bool = False,
        min_snr_gamma: float = 0.0,
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction {prediction!r} is not one of {PREDICTIONS}; set diffusion.ddpm.prediction.")
        if min_snr_gamma < 0:
            raise ValueError(f"diffusion.ddpm.min_snr_gamma must be >= 0 (0: off), got {min_snr_gamma}")
        self.prediction = prediction
        self.min_snr_gamma = float(min_snr_gamma)
        self.num_train_timesteps = int(num_train_timesteps)
        self.alphas_cumprod = ddpm_alphas_cumprod(
            schedule, num_train_timesteps, beta_start, beta_end, zero_terminal_snr
        )
        self.schedule = VPSchedule(self.alphas_cumprod)

    def _abar(self, t: jax.Array) -> jax.Array:
        return jnp.asarray(self.alphas_cumprod, jnp.float32)[t]

    def add_noise(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for integer timesteps t (B,)."""
        abar = per_example(self._abar(t), x0)
        return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise

    def target(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        """What the network is trained to output at t: noise, v = sqrt(abar) noise - sqrt(1-abar) x0, or x0."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "x0":
            return x0
        abar = per_example(self._abar(t), x0)
        return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0

    def snr(self, t: jax.Array) -> jax.Array:
        """abar_t / (1 - abar_t)."""
        abar = self._abar(t)
        return abar / (1.0 - abar)

    def loss_weight(self, t: jax.Array) -> jax.Array:
        """Min-SNR-gamma (Hang et al. 2023): weight min(SNR, gamma) on the x0 error, in this prediction's units.

        The squared error of the raw output equals the x0 error times SNR (epsilon),
        SNR + 1 (v) or 1 (x0), so the weights are min(1, gamma/SNR), min(SNR, gamma)/(SNR + 1)
        and min(SNR, gamma). gamma = 0 turns the weighting off (weight 1).
        """
        if self.min_snr_gamma == 0:
            return jnp.ones(jnp.shape(t), jnp.float32)
        snr, gamma = self.snr(t), self.min_snr_gamma
        if self.prediction == "epsilon":
            return jnp.minimum(1.0, gamma / snr)
        if self.prediction == "v":
            return jnp.minimum(snr, gamma) / (snr + 1.0)
        return jnp.minimum(snr, gamma)

    def draw_level(self, key: jax.Array) -> jax.Array:
        """One training timestep, uniform over the discrete schedule."""
        return jax.random.randint(key, (), 0, self.num_train_timesteps)

    def loss_terms(
        self, model_fn: ModelFn, x0: jax.Array, noise: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        time = t.astype(jnp.float32)
        raw = model_fn(self.add_noise(x0, noise, t), time).astype(jnp.float32)
        per_example_loss = self.loss_weight(t) * mean_per_example((raw - self.target(x0, noise, t)) ** 2)
        return per_example_loss, time

    def denoise(self, model_fn: ModelFn, x: jax.Array, sigma: jax.Array) -> jax.Array:
        c_skip, c_out, c_in = (per_example(c, x) for c in vp_preconditioning(self.prediction, sigma))
        raw = model_fn(c_in * x, self.schedule.timestep(sigma)).astype(jnp.float32)
        return c_skip * x + c_out * raw

    def sampling_sigmas(self, num_steps: int) -> np.ndarray:
        """sigma at the trailing timesteps (T-1 first), then 0: diffusers' timestep_spacing="trailing"."""
        return np.append(self.schedule.sigmas[trailing_timesteps(num_steps, self.num_train_timesteps)], 0.0)

    def initial_noise_scale(self, sigma_max: float) -> float:
        """sqrt(1 + sigma_max^2): unit-variance noise in VP coordinates, as DDPM samplers start."""
        return float(np.sqrt(1.0 + sigma_max**2))
