"""pyoco_jax: video diffusion in JAX (PYoCo noise priors, MagicVideo latent video U-Nets)."""
