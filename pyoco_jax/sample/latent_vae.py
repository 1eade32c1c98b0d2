"""The config's VAE (`vae.path`) behind one interface, whichever family its folder holds (`convert.families`):
Stable Diffusion's AutoencoderKL, run frame by frame, or Wan 2.1's causal video VAE (4x fewer frames).

A latent model sees *model latents*: SD's (z - shift_factor) * scaling_factor, Wan's per-channel
(z - latents_mean) / latents_std. The latent cache (`pyoco-prepare`) stores posteriors in units that its
loader turns into model latents with one scale and shift (`scaling_factor`, `shift_factor` here): SD's raw
posterior with the VAE's factors, Wan's posterior already normalised per channel with factors 1 and 0.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from pyoco_jax.convert.families import WAN, vae_family
from pyoco_jax.errors import ConfigError
from pyoco_jax.models.vae import AutoencoderKL
from pyoco_jax.models.vae.wan import WanVAE


@dataclasses.dataclass(frozen=True)
class LatentVAE:
    module: AutoencoderKL | WanVAE

    @property
    def is_wan(self) -> bool:
        return isinstance(self.module, WanVAE)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along a side."""
        config = self.module.config
        return config.spatial_factor if self.is_wan else config.downsampling_factor

    @property
    def channels(self) -> int:
        return self.module.config.z_dim if self.is_wan else self.module.config.latent_channels

    @property
    def scaling_factor(self) -> float:
        return 1.0 if self.is_wan else self.module.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return 0.0 if self.is_wan else self.module.config.shift_factor

    def pixel_frames(self, latent_frames: int) -> int:
        """Video frames that encode to `latent_frames`: Wan keeps frame 0 and packs 4 per latent after it."""
        return 1 + self.module.config.temporal_factor * (latent_frames - 1) if self.is_wan else latent_frames

    def _jitted(self, fn: Callable) -> Callable[[jax.Array], jax.Array]:
        """`fn(vae, x)` as a jitted function of `x`, the weights passed as an argument (not baked in as constants)."""
        graphdef, state = nnx.split(self.module)
        compiled = jax.jit(lambda state, x: fn(nnx.merge(graphdef, state), x))
        return lambda x: compiled(state, x)

    def posterior_fn(self) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
        """Video (B, F, H, W, 3) in [-1, 1] -> (mean, std) of the posterior in the cache's units (module doc)."""

        def posterior(vae, video):
            if isinstance(vae, WanVAE):
                moments = vae.encode(video)
                std = jnp.asarray(vae.config.latents_std, jnp.float32)
                return vae.config.normalize_latents(moments.mean), moments.std / std
            moments = vae.encode_video(video)
            return moments.mean, moments.std

        return self._jitted(posterior)

    def encode_fn(self) -> Callable[[jax.Array], jax.Array]:
        """Video in [-1, 1] -> model latents of the posterior mean."""
        scale, shift, posterior = self.scaling_factor, self.shift_factor, self.posterior_fn()
        return lambda video: (posterior(video)[0] - shift) * scale

    def decode_fn(self) -> Callable[[jax.Array], jax.Array]:
        """Model latents (B, F, h, w, c) -> video in [-1, 1]."""

        def decode(vae, latents):
            if isinstance(vae, WanVAE):
                return vae.decode(vae.config.denormalize_latents(latents.astype(jnp.float32)))
            return vae.decode_video(vae.config.unscale_latents(latents))

        return self._jitted(decode)


def load_latent_vae(config: ml_collections.ConfigDict, purpose: str) -> LatentVAE:
    """The VAE of `vae.path`, checked against the config before anything compiles; `purpose` says why it is needed."""
    vae = config.vae
    if not vae.path:
        raise ConfigError(f"config key 'vae.path' is empty: {purpose} needs the VAE; set it to the run's VAE folder")
    if vae_family(vae.path) == WAN:
        if vae.video_decoder:
            raise ConfigError("config key 'vae.video_decoder': Wan's VAE decodes video itself; set it to ''")
        from pyoco_jax.convert.wan_vae import load_wan_vae

        latent_vae = LatentVAE(load_wan_vae(vae.path, dtype=vae.dtype))
    else:
        from pyoco_jax.convert.vae import load_vae

        latent_vae = LatentVAE(load_vae(vae.path, dtype=vae.dtype, allow_pickle=vae.allow_pickle))
    if latent_vae.channels != config.data.channels:
        raise ConfigError(
            f"config key 'data.channels': is {config.data.channels}, but the VAE at {vae.path} has "
            f"{latent_vae.channels} latent channels; set it (and model.in_channels, out_channels) to that"
        )
    return latent_vae
