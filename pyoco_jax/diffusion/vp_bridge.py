"""The VP -> EDM bridge: a network trained as DDPM (epsilon, v or x0 prediction) as an EDM denoiser D(x; sigma).

PYoCo fine-tunes a pretrained image model in the EDM formulation. A DDPM network saw
x_t = sqrt(abar) x0 + sqrt(1 - abar) eps at timestep t. In EDM's coordinates x = x0 + sigma eps the
same point is x_t = x / sqrt(1 + sigma^2), with abar = 1 / (1 + sigma^2), so with c_in = 1 / sqrt(1 + sigma^2)
and F the network's output at (c_in x, t(sigma)), D = c_skip x + c_out F where
    epsilon: x0 = x - sigma eps                                 c_skip = 1,                 c_out = -sigma
    v:       x0 = sqrt(abar) x_t - sqrt(1 - abar) v             c_skip = 1 / (1 + sigma^2), c_out = -sigma c_in
             (v = sqrt(abar) eps - sqrt(1 - abar) x0)
    x0:      x0 = F                                             c_skip = 0,                 c_out = 1
t(sigma) is the fractional timestep where the schedule's log sigma equals log sigma (linear between the
discrete timesteps, as k-diffusion's DiscreteEpsDDPMDenoiser and diffusers' Euler scheduler do).

The network never saw a sigma outside the schedule's [sigma(0), sigma(T-1)]: the EDM sigma_min/sigma_max
must lie inside it (checked here, when the bridge is built from the config), training draws ln(sigma) from
EDM's normal truncated to [ln sigma_min, ln sigma_max], and t(sigma) saturates at the schedule's ends for a
sampler's stray sigma (e.g. churn above sigma_max) while c_skip, c_out and c_in keep the true sigma.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.schedules import ddpm_alphas_cumprod

BRIDGED_PREDICTIONS = ("epsilon", "v", "x0")

ZERO_SNR_ALPHA_CUMPROD = 2.0**-24
"""abar used where the schedule has abar = 0 (sigma = inf), as diffusers does."""

RANGE_RTOL = 1e-5
"""sigma_min/sigma_max this close (relative) outside the schedule's range count as its ends: printed values pass."""


class VPSchedule:
    """The discrete sigmas of a DDPM schedule, and the continuous maps sigma <-> fractional timestep over them."""

    def __init__(self, alphas_cumprod: np.ndarray):
        abar = np.where(alphas_cumprod > 0, alphas_cumprod, ZERO_SNR_ALPHA_CUMPROD)
        self.sigmas = np.sqrt((1.0 - abar) / abar)  # float64, increasing with the timestep

    @classmethod
    def from_config(cls, ddpm: ml_collections.ConfigDict) -> "VPSchedule":
        """The schedule of the `diffusion.ddpm` section (schedule, timesteps, betas, zero terminal SNR)."""
        return cls(
            ddpm_alphas_cumprod(
                ddpm.schedule, ddpm.num_train_timesteps, ddpm.beta_start, ddpm.beta_end, ddpm.zero_terminal_snr
            )
        )

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: jax.Array) -> jax.Array:
        """The fractional timestep whose sigma is `sigma` (log-sigma interpolation), clamped to [0, T-1]."""
        steps = jnp.arange(len(self.sigmas), dtype=jnp.float32)
        log_sigmas = jnp.asarray(np.log(self.sigmas), jnp.float32)
        return jnp.interp(jnp.log(jnp.asarray(sigma, jnp.float32)), log_sigmas, steps)

    def sigma(self, timestep: jax.Array) -> jax.Array:
        """The inverse of `timestep`: log sigma interpolated linearly at a fractional timestep in [0, T-1]."""
        steps = jnp.arange(len(self.sigmas), dtype=jnp.float32)
        log_sigmas = jnp.asarray(np.log(self.sigmas), jnp.float32)
        return jnp.exp(jnp.interp(jnp.asarray(timestep, jnp.float32), steps, log_sigmas))


def vp_preconditioning(prediction: str, sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(c_skip, c_out, c_in) making D(x; sigma) = c_skip x + c_out F(c_in x, t) of a VP network's `prediction` F."""
    sigma = jnp.asarray(sigma, jnp.float32)
    c_in = jax.lax.rsqrt(1.0 + sigma**2)
    if prediction == "epsilon":
        return jnp.ones_like(sigma), -sigma, c_in
    if prediction == "v":
        return c_in**2, -sigma * c_in, c_in
    if prediction == "x0":
        return jnp.zeros_like(sigma), jnp.ones_like(sigma), c_in
    raise ValueError(f"prediction {prediction!r} is not one of {BRIDGED_PREDICTIONS}")


def _check_range(schedule: VPSchedule, sigma_min: float, sigma_max: float) -> None:
    low, high = schedule.sigma_min, schedule.sigma_max
    advice = (
        f"the pretrained network was trained on the diffusion.ddpm schedule's sigmas [{low:.6g}, {high:.6g}] only; "
        f"use a value in that range (or set diffusion.ddpm to the pretrained model's schedule)"
    )
    if sigma_min < low * (1 - RANGE_RTOL):
        raise ValueError(f"config key 'diffusion.edm.sigma_min': {sigma_min} is below {low:.6g}: {advice}")
    if sigma_max > high * (1 + RANGE_RTOL):
        raise ValueError(f"config key 'diffusion.edm.sigma_max': {sigma_max} is above {high:.6g}: {advice}")
    if not sigma_min < sigma_max:
        raise ValueError(f"config key 'diffusion.edm.sigma_max': {sigma_max} must exceed sigma_min {sigma_min}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BridgedEDM(EDM):
    """EDM training and sampling (log-normal sigmas, lambda(sigma), Karras grid) on a pretrained VP network.

    Only the preconditioning changes (the table above, c_noise = t(sigma)), so the EDM loss weight and
    every sampler work unchanged through D(x; sigma). That weight lambda(sigma) stays in x0 units: on an
    epsilon network it weighs the epsilon error by (sigma^2 + sigma_data^2) / sigma_data^2.
    """

    prediction: str
    schedule: VPSchedule

    def __post_init__(self):
        if self.prediction not in BRIDGED_PREDICTIONS:
            raise ValueError(
                f"config key 'diffusion.edm.pretrained_prediction': {self.prediction!r} is not one of "
                f"{BRIDGED_PREDICTIONS}"
            )
        _check_range(self.schedule, self.sigma_min, self.sigma_max)

    def preconditioning(self, sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(c_skip, c_out, c_in, c_noise): the VP network's coefficients, c_noise its fractional timestep."""
        c_skip, c_out, c_in = vp_preconditioning(self.prediction, sigma)
        return c_skip, c_out, c_in, self.schedule.timestep(sigma)

    def draw_level(self, key: jax.Array) -> jax.Array:
        """ln(sigma) ~ N(p_mean, p_std^2) truncated to [ln sigma_min, ln sigma_max]: sigmas the network knows."""
        lower = (np.log(self.sigma_min) - self.p_mean) / self.p_std
        upper = (np.log(self.sigma_max) - self.p_mean) / self.p_std
        z = jax.random.truncated_normal(key, lower, upper, (), jnp.float32)
        return jnp.clip(jnp.exp(self.p_mean + self.p_std * z), self.sigma_min, self.sigma_max)
