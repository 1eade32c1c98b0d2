"""One optimizer step as a pure function of (train state, batch), for jit.

Randomness is drawn per example from fold_in(fold_in(rng, step), global example
index): the same example gets the same noise whatever the mesh, the number of
processes or the micro-batching, so a sharded or accumulated step equals the
plain one and a resumed run continues exactly.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from pyoco_jax import parallel
from pyoco_jax.conditioning import is_conditioned, training_condition
from pyoco_jax.models.lora import enable_dropout, lora_spec
from pyoco_jax.train.state import TrainState
from pyoco_jax.video_range import video_to_model_range

Batch = dict[str, jax.Array]


def example_keys(rng: jax.Array, step: jax.Array, batch_size: int) -> jax.Array:
    """One key per example of the global batch, a function of (rng, step, index) only."""
    step_key = jax.random.fold_in(rng, step)
    return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(jnp.arange(batch_size))


def drop_condition(values: jax.Array, keys: jax.Array, rate: float, null) -> jax.Array:
    """Replaces each example's condition (label, or text context) by `null` with probability `rate`.

    The draw depends only on the example's key, so a label and a text context of one example are
    dropped together, as classifier-free guidance's unconditional model expects.
    """
    if rate <= 0:
        return values
    draws = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0)))(keys)
    dropped = (draws < rate).reshape(-1, *([1] * (values.ndim - 1)))
    return jnp.where(dropped, jnp.asarray(null, values.dtype), values)


def _interleave(x: jax.Array, k: int) -> jax.Array:
    """(B, ...) -> (k, B/k, ...) with micro-batch j = x[j::k], so every device holds part of each."""
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
    """decay, warmed up as (1+s)/(10+s) so short runs do not average in their random init."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_loss_and_grads(
    graphdef: nnx.GraphDef,
    formulation,
    config: ml_collections.ConfigDict,
    mesh: Mesh | None = None,
    null_context: np.ndarray | None = None,
) -> Callable[[nnx.State, nnx.State, Batch, jax.Array], tuple[jax.Array, nnx.State]]:
    """`(params, frozen, batch, keys) -> (loss, grads)`, averaged over `optim.accum_steps` micro-batches.

    With a `mesh`, the model's input and output video are constrained to the batch layout (rows over
    the data-parallel axes, frames over `sequence` where they divide), so the noised video is built where its
    rows live, and the model is traced in `parallel.model_context` (DiT tokens split over `sequence`, fused
    attention kernels per device).
    """
    optim, model_config = config.optim, config.model
    accum = int(optim.accum_steps)
    null_label = int(model_config.num_classes)
    use_labels = model_config.num_classes > 0
    use_fps = bool(model_config.fps_conditioning)
    prior = config.noise.prior
    alpha = float(config.noise.alpha)
    conditioned = is_conditioned(config)
    spec = lora_spec(model_config)
    lora_dropout = spec is not None and spec.dropout > 0

    def constrain(video: jax.Array) -> jax.Array:
        if mesh is None:
            return video
        return jax.lax.with_sharding_constraint(video, NamedSharding(mesh, parallel.video_spec(mesh, video.shape[1])))

    def micro_loss(params: nnx.State, frozen: nnx.State, micro: Batch, keys: jax.Array):
        # Fresh Variables inside this trace: frozen params come from the outer (jit) trace, and nnx.remat
        # refuses to update Variables created at another trace level.
        model = nnx.merge(graphdef, params, frozen, copy=True)
        if lora_dropout:
            enable_dropout(model, keys)
        x0 = video_to_model_range(micro["video"])
        labels = drop_condition(micro["label"], keys, optim.label_drop_rate, null_label) if use_labels else None
        context = micro.get("context")
        if context is not None and null_context is not None:
            context = drop_condition(context, keys, optim.label_drop_rate, null_context)
        fps = micro["fps"] if use_fps else None
        condition = augmentation = None
        if conditioned:  # Built from the clean clip: its given frames and/or its low-resolution version.
            condition, augmentation = training_condition(config.condition, x0, jax.random.fold_in(keys[0], 2))
            augmentation = augmentation if model_config.condition_augmentation else None

        def model_fn(x, t):
            with parallel.model_context(mesh, config.mesh):  # Token split and attention kernels on the mesh.
                out = model(constrain(x), t, context=context, labels=labels, fps=fps, condition=condition,
                            augmentation=augmentation)  # fmt: skip
            return constrain(out)

        diffusion_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        loss, _ = formulation.loss(model_fn, x0, diffusion_keys, prior=prior, alpha=alpha)
        return loss

    grad_fn = jax.value_and_grad(micro_loss)

    def loss_and_grads(params: nnx.State, frozen: nnx.State, batch: Batch, keys: jax.Array):
        if accum == 1:
            return grad_fn(params, frozen, batch, keys)
        micro_batches = jax.tree.map(lambda x: _interleave(x, accum), (batch, keys))

        def accumulate(carry, micro):
            loss, grads = grad_fn(params, frozen, *micro)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro_batches)
        return jax.tree.map(lambda x: x / accum, (loss, grads))

    return loss_and_grads


def make_train_step(
    graphdef: nnx.GraphDef,
    formulation,
    optimizer: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    mesh: Mesh | None = None,
    null_context: np.ndarray | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds `step(state, batch) -> (state, metrics)`; jit it with shardings and donation.

    Precision: the layers compute in `model.dtype` (norms and softmax in float32); params, gradients
    and optimizer state have `model.param_dtype` (float32 by default); the loss, the gradient norm
    and the EMA are float32 either way.
    """
    optim = config.optim
    loss_and_grads = make_loss_and_grads(graphdef, formulation, config, mesh, null_context)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        keys = example_keys(state.rng, state.step, batch["video"].shape[0])
        loss, grads = loss_and_grads(state.params, state.frozen, batch, keys)
        grad_norm = optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads))
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay(state.step, optim.ema_decay)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(jnp.float32), state.ema, params)

        def keep_if_finite(new, old):
            return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

        new_state = state.replace(
            step=state.step + 1,
            params=keep_if_finite(params, state.params),
            opt_state=keep_if_finite(opt_state, state.opt_state),
            ema=keep_if_finite(ema, state.ema),
            nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "nonfinite_streak": new_state.nonfinite_streak,
            "nonfinite_total": new_state.nonfinite_total,
        }
        return new_state, metrics

    return step
