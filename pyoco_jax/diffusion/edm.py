"""EDM (Karras et al. 2022): the formulation PYoCo's eDiff-I base model uses.

Preconditioning keeps the network's input and training target at unit variance
for every sigma (Table 1): D(x, sigma) = c_skip x + c_out F(c_in x, c_noise).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pyoco_jax.diffusion.formulation import Formulation, ModelFn, mean_per_example, per_example
from pyoco_jax.diffusion.schedules import karras_sigmas


@dataclasses.dataclass(frozen=True)
class EDM(Formulation):
    """Continuous sigma, log-normal training levels, Karras sampling grid."""

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def preconditioning(self, sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(c_skip, c_out, c_in, c_noise) of Karras et al. Table 1 for an array of sigmas."""
        sigma = jnp.asarray(sigma, jnp.float32)
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        c_skip = sd2 / total
        c_out = sigma * self.sigma_data * jax.lax.rsqrt(total)
        c_in = jax.lax.rsqrt(total)
        c_noise = jnp.log(sigma) / 4.0
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: jax.Array) -> jax.Array:
        """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2: unit effective weight."""
        sigma = jnp.asarray(sigma, jnp.float32)
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def add_noise(self, x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
        """x = x0 + sigma * noise with one sigma per example (B,)."""
        return x0 + per_example(jnp.asarray(sigma, jnp.float32), x0) * noise

    def draw_level(self, key: jax.Array) -> jax.Array:
        """One training sigma: ln(sigma) ~ N(p_mean, p_std^2)."""
        return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, (), jnp.float32))

    def denoise(self, model_fn: ModelFn, x: jax.Array, sigma: jax.Array) -> jax.Array:
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        raw = model_fn(per_example(c_in, x) * x, c_noise).astype(jnp.float32)
        return per_example(c_skip, x) * x + per_example(c_out, x) * raw

    def loss_terms(
        self, model_fn: ModelFn, x0: jax.Array, noise: jax.Array, sigma: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        denoised = self.denoise(model_fn, self.add_noise(x0, noise, sigma), sigma)
        per_example_loss = self.loss_weight(sigma) * mean_per_example((denoised - x0) ** 2)
        return per_example_loss, self.preconditioning(sigma)[3]

    def sampling_sigmas(self, num_steps: int) -> np.ndarray:
        return karras_sigmas(num_steps, self.sigma_min, self.sigma_max, self.rho)

    def initial_noise_scale(self, sigma_max: float) -> float:
        return sigma_max
