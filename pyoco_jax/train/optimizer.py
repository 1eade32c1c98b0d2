"""Learning-rate schedule and AdamW, built from `config.optim`."""

import re

import jax
import ml_collections
import optax

from pyoco_jax.train.state import param_path

SCHEDULES = ("cosine", "constant")  # Both after linear warmup.


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


def path_mask(pattern: str):
    """A mask function for `optax.masked`: True at the leaves whose path matches `pattern`."""
    regex = re.compile(pattern)
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: regex.search(param_path(path)) is not None, params
    )


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """AdamW (weight decay on matrices and kernels only) after global-norm clipping.

    Params matching `optim.lr_scale_pattern` take `optim.lr_scale` times the step: new layers (the
    temporal ones) can learn faster than the image weights they sit between.
    """
    parts = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm > 0 else []
    parts.append(
        optax.adamw(
            learning_rate_schedule(optim, num_steps),
            b1=optim.b1,
            b2=optim.b2,
            weight_decay=optim.weight_decay,
            mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
        )
    )
    if optim.lr_scale != 1.0:
        parts.append(optax.masked(optax.scale(optim.lr_scale), path_mask(optim.lr_scale_pattern)))
    return optax.chain(*parts)
