"""Learning-rate schedule and AdamW, built from `config.optim`."""

import jax
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then constant or cosine decay to `end_learning_rate_factor`."""
    warmup = max(int(optim.warmup_steps), 0)
    peak = float(optim.learning_rate)
    if optim.schedule == "constant":
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, max(num_steps - warmup, 1), alpha=optim.end_learning_rate_factor)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """AdamW (weight decay on matrices and kernels only) after global-norm clipping."""
    adamw = optax.adamw(
        learning_rate_schedule(optim, num_steps),
        b1=optim.b1,
        b2=optim.b2,
        weight_decay=optim.weight_decay,
        mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
    )
    if optim.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), adamw)
    return adamw
