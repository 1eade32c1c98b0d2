"""pyoco_jax: video diffusion in JAX (PYoCo noise priors, MagicVideo latent video U-Nets)."""

from pyoco_jax.platforms import start_cpu_alone_without_accelerators

start_cpu_alone_without_accelerators()
