"""The VideoVAE fine-tuning loss and optimizer step, as pure functions for jit.

The frozen image VAE encodes every frame on its own; the VideoVAE decodes the clip's latents
together; the loss is the reconstruction error plus `temporal_weight` times the error of the
frame-to-frame differences, both under the same norm (l1 or l2):

    loss = mean |x^ - x|^p + w * mean |(x^_{f+1} - x^_f) - (x_{f+1} - x_f)|^p,   p = 1 or 2

The temporal term is the flicker metric (for p = 1), so fine-tuning lowers flicker directly.
"""

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pyoco_jax.evaluate.flicker import frame_differences
from pyoco_jax.video_range import video_to_model_range

LOSSES = ("l1", "l2")
Metrics = dict[str, jax.Array]


def video_vae_loss(
    reconstruction: jax.Array, target: jax.Array, *, loss: str, temporal_weight: float
) -> tuple[jax.Array, Metrics]:
    """(total loss, its parts) for videos (B, F, H, W, C) in the same units."""
    if loss not in LOSSES:
        raise ValueError(f"vae.loss={loss!r} is not one of {LOSSES}")
    norm = jnp.abs if loss == "l1" else jnp.square
    reconstruction, target = reconstruction.astype(jnp.float32), target.astype(jnp.float32)
    pixels = jnp.mean(norm(reconstruction - target))
    temporal = jnp.mean(norm(frame_differences(reconstruction) - frame_differences(target)))
    return pixels + temporal_weight * temporal, {"reconstruction": pixels, "temporal": temporal}


@flax.struct.dataclass
class VideoVAEState:
    """What a fine-tune step reads and writes, and what its checkpoints hold.

    The frozen 2D weights and the image VAE's encoder are not here: every run rebuilds them from
    `vae.path`. Step s (counted from 0) samples the posterior with fold_in(rng, s), so a resumed
    run draws what an unbroken one would.
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    rng: jax.Array


def init_video_vae_state(params: nnx.State, optimizer: optax.GradientTransformation, seed: int) -> VideoVAEState:
    """Step 0 of a fine-tune; the root key is a raw uint32 key, which Orbax saves like any array."""
    return VideoVAEState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=jax.random.PRNGKey(seed)
    )


def make_video_vae_step(
    graphdef: nnx.GraphDef,
    encoder_graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    *,
    loss: str,
    temporal_weight: float,
    sample_posterior: bool,
) -> Callable:
    """`step(state, frozen, encoder, video) -> (state, metrics)`.

    `state.params`/`frozen`: the VideoVAE's trained and fixed parameters (split by `nnx.split`);
    `encoder`: the image VAE's state (only its encoder and quant conv are used, never trained);
    `video`: uint8 or [-1, 1] float clips (B, F, H, W, C).
    """

    def step(state: VideoVAEState, frozen, encoder, video):
        target = video_to_model_range(video)
        posterior = nnx.merge(encoder_graphdef, encoder).encode_video(target)
        key = jax.random.fold_in(state.rng, state.step)
        latents = posterior.sample(key) if sample_posterior else posterior.mode()

        def loss_fn(params):
            reconstruction = nnx.merge(graphdef, params, frozen)(latents)
            return video_vae_loss(reconstruction, target, loss=loss, temporal_weight=temporal_weight)

        (total, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return state, {"loss": total, "grad_norm": optax.tree.norm(grads), **metrics}

    return step


def make_video_vae_optimizer(
    learning_rate: float, *, warmup_steps: int, weight_decay: float
) -> optax.GradientTransformation:
    """AdamW with linear warmup to a constant rate; weight decay on kernels only."""
    schedule = optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps > 0 else learning_rate
    return optax.adamw(
        schedule, weight_decay=weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    )
