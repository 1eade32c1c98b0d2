"""What a latent run needs around the U-Net: prompts -> context, and latents -> pixels.

Sampling a text-to-video model encodes the prompts (and the empty prompt, the unconditional half of
classifier-free guidance) with the config's CLIP text encoder, and decodes the sampled latents with
the fine-tuned VideoVAE (`vae.video_decoder`) or, without one, the image VAE frame by frame.
"""

from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx


def is_latent(config: ml_collections.ConfigDict) -> bool:
    """Whether the model works on VAE latents (so its samples need decoding)."""
    return config.data.source == "latents" or bool(config.vae.video_decoder)


def encode_text(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(context (N, T, D) of `prompts`, the empty prompt's (T, D)) from `text.path`'s encoder."""
    if not config.text.path:
        raise ValueError("text.path is empty: prompts need the CLIP text encoder (a folder, or an SD pipeline folder)")
    from pyoco_jax.convert.clip import encode_prompts, load_text_encoder, load_tokenizer

    encoder, tokenizer = load_text_encoder(config.text.path), load_tokenizer(config.text.path)
    skip = int(config.text.skip_last_layers)
    context = np.asarray(encode_prompts(encoder, tokenizer, [*prompts, ""], skip_last_layers=skip))
    width = config.model.cross_attention_dim
    if context.shape[-1] != width:
        raise ValueError(
            f"the text encoder at {config.text.path} gives {context.shape[-1]}-wide embeddings, "
            f"the model cross-attends to model.cross_attention_dim={width}"
        )
    return context[:-1], context[-1]


def make_latent_decoder(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """Scaled latents (B, F, h, w, c) -> pixels in [-1, 1], jitted: VideoVAE if configured, else per-frame VAE."""
    from pyoco_jax.convert.vae import load_vae

    if not config.vae.path:
        raise ValueError(
            "vae.path is empty: decoding latents needs the VAE (its scaling factor and, "
            "without vae.video_decoder, its decoder)"
        )
    vae = load_vae(config.vae.path, dtype=config.vae.dtype, allow_pickle=config.vae.allow_pickle)
    vae_config = vae.config
    if config.vae.video_decoder:
        from pyoco_jax.train.video_vae_checkpoint import load_video_vae

        decoder = load_video_vae(config.vae.video_decoder, dtype=config.vae.dtype)
    else:
        decoder = vae
    graphdef, state = nnx.split(decoder)
    video_decoder = bool(config.vae.video_decoder)

    @jax.jit
    def decode(latents: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        z = vae_config.unscale_latents(latents)
        return model(z) if video_decoder else model.decode_video(z)

    return decode


def sample_conditioning(config: ml_collections.ConfigDict, null_context: np.ndarray | None) -> dict:
    """`sample_videos` keyword arguments for a run's periodic samples: prompts' context and decoding.

    Pixel models need none. Text models sample `sample.prompts` (cycled over `sample.num_samples`)
    against the training cache's empty-prompt embedding; latent models decode through the VAE.
    """
    conditioning = {}
    if config.model.cross_attention_dim and null_context is not None:
        prompts = [p for p in config.sample.prompts if p] or []
        num = config.sample.num_samples
        context = encode_text(config, [prompts[i % len(prompts)] for i in range(num)])[0] if prompts else None
        if context is None:
            context = np.broadcast_to(null_context, (num, *null_context.shape))
        conditioning.update(context=context, null_context=null_context)
    if is_latent(config):
        conditioning["decode"] = make_latent_decoder(config)
    return conditioning
