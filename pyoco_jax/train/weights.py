"""The model weights of a training checkpoint, read on one device whatever mesh wrote them.

Export and inference need only the params (or their EMA) and the frozen params, so the optimizer
state is never read: a checkpoint restores in the memory of the model alone.
"""

import jax
import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.config import validate
from pyoco_jax.convert.merge import merge_params, path_name
from pyoco_jax.errors import UserError
from pyoco_jax.train.build import Backbone, build_model, build_run
from pyoco_jax.train.checkpoint import Checkpointer, abstract_like


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """No checkpoint (or not the requested step) in a workdir; the message lists what exists."""


def checkpoint_weights(
    workdir: str, step: int | None = None, *, ema: bool = False
) -> tuple[ml_collections.ConfigDict, int, dict[str, np.ndarray]]:
    """(config, step, dotted name -> array) of the checkpoint at `step` (default: the latest).

    `ema=True` takes the EMA of the trained params instead of the params themselves; frozen
    params are included either way, so the result is the whole model.
    """
    checkpointer = Checkpointer(workdir)
    try:
        steps = checkpointer.all_steps()
        step = max(steps, default=None) if step is None else step
        if step is None or step not in steps:
            raise CheckpointNotFoundError(
                f"no checkpoint{'' if step is None else f' at step {step}'} in {checkpointer.directory}; "
                f"available steps: {sorted(steps)}"
            )
        config = validate(checkpointer.restore_config(step))
        abstract = build_run(config).abstract_state
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        trained = "ema" if ema else "params"
        wanted = {trained: getattr(abstract, trained), "frozen": abstract.frozen}
        restored = checkpointer.restore_subset(step, abstract_like(wanted, jax.tree.map(lambda _: device, wanted)))
    finally:
        checkpointer.close()
    weights = {}
    for part in (trained, "frozen"):
        for path, value in nnx.to_flat_state(restored[part]):
            weights[path_name(path)] = np.asarray(value.get_value() if hasattr(value, "get_value") else value)
    return config, step, weights


def model_from_weights(config: ml_collections.ConfigDict, weights: dict[str, np.ndarray]) -> Backbone:
    """The `model.backbone` of `config` holding `weights` (as `checkpoint_weights` returns them)."""
    abstract = nnx.eval_shape(lambda: build_model(config, 0))
    graphdef, state = nnx.split(abstract)
    return nnx.merge(graphdef, merge_params(state, weights)[0])
