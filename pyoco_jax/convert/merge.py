"""Merging pretrained image-model parameters into a (freshly initialised) video model's state.

This is how a video U-Net starts from an image U-Net: every 2D parameter must come from the
source with the same shape, every source tensor must be used, and only the layers the image
model cannot have (temporal layers, adaptors, fps and class embeddings) may stay freshly
initialised. Anything else is an error that lists the offending names.
"""

import dataclasses
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from pyoco_jax.errors import UserError

# Parameters an image checkpoint may lack: they keep their fresh initialisation.
NEW_PARAM_PATTERN = re.compile(
    r"(^|\.)(temporal_\w+|adaptor|fps_embedding|class_embedding|conv_in_condition|augmentation_embedding|lora)(\.|$)"
)
CLASS_TABLE = "class_embedding.embedding"
_MAX_LISTED = 20


class ConversionError(UserError):
    """Pretrained weights (or their files) that do not fit the model; the message lists what to fix."""


@dataclasses.dataclass
class LoadReport:
    """Which parameters came from the checkpoint and which are new (freshly initialised)."""

    loaded: list[str] = dataclasses.field(default_factory=list)
    new: list[str] = dataclasses.field(default_factory=list)
    partial: list[str] = dataclasses.field(default_factory=list)  # e.g. class table: rows loaded, null row new
    loaded_count: int = 0  # scalars loaded
    new_count: int = 0  # scalars freshly initialised
    from_cache: bool = False  # the converted-weights cache supplied the tensors

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors ({self.loaded_count:,} params), "
            f"new {len(self.new)} tensors ({self.new_count:,} params)"
            + (f", partially loaded: {self.partial}" if self.partial else "")
        )


def path_name(path: tuple) -> str:
    """('down_blocks', 0, 'resnets', 1, 'conv1', 'kernel') -> 'down_blocks.0.resnets.1.conv1.kernel'."""
    return ".".join(str(p) for p in path)


def flat_params(tree: nnx.State | nnx.Module) -> dict[str, nnx.Param]:
    """Dotted name -> Param variable of a module or state."""
    state = nnx.state(tree, nnx.Param) if isinstance(tree, nnx.Module) else tree
    return {path_name(p): v for p, v in nnx.to_flat_state(state) if isinstance(v, nnx.Param)}


def _listed(names: list[str]) -> str:
    extra = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + extra


def _placed(value: np.ndarray, like) -> jax.Array:
    """`value` with the sharding of the array it replaces, so a sharded state stays sharded.

    Single-device targets get a plain (uncommitted) array like a fresh init's, so jitted callers
    see the same input kind before and after a merge and do not recompile.
    """
    sharding = getattr(like, "sharding", None)
    if sharding is None or len(sharding.device_set) == 1:
        return jnp.asarray(value)
    return jax.device_put(value, sharding)


def merge_params(
    state: nnx.State, params: Mapping[str, np.ndarray] | nnx.State | nnx.Module
) -> tuple[nnx.State, LoadReport]:
    """Returns `state` with every tensor of `params` put in place, and the report.

    `state`: the video model's state (e.g. `nnx.state(model)` or from `nnx.split`); `params`:
    dotted name -> array (as `convert.diffusers.convert_state_dict` makes) or an image
    model/state. Arrays are cast to the target's dtype and placed with its sharding. Raises ConversionError on a shape
    mismatch, an unused source tensor or a missing 2D parameter.
    """
    if isinstance(params, (nnx.State, nnx.Module)):
        params = {k: v.get_value() for k, v in flat_params(params).items()}
    targets = dict(nnx.to_flat_state(state))
    names = {path_name(p): p for p, v in targets.items() if isinstance(v, nnx.Param)}
    report, updates, errors = LoadReport(), {}, []
    unused = sorted(set(params) - set(names))
    if unused:
        errors.append(f"{len(unused)} checkpoint tensors have no place in the model: {_listed(unused)}")
    for name, path in sorted(names.items()):
        variable = targets[path]
        shape, dtype = tuple(variable.get_value().shape), variable.get_value().dtype
        if name not in params:
            if NEW_PARAM_PATTERN.search(name):
                report.new.append(name)
                report.new_count += int(np.prod(shape))
            else:
                errors.append(f"missing from the checkpoint: {name} {shape}")
            continue
        value = np.asarray(params[name])
        if name.endswith(CLASS_TABLE) and value.shape == (shape[0] - 1, *shape[1:]):
            # A checkpoint's class table lacks our null-label row: load its rows, keep ours fresh.
            report.partial.append(f"{name}: {value.shape[0]} rows loaded, null-label row new")
            report.new_count += int(np.prod(shape[1:]))
            report.loaded_count += value.size
            value = np.concatenate([value, np.asarray(variable.get_value()[-1:], value.dtype)])
        elif value.shape != shape:
            errors.append(f"shape mismatch for {name}: checkpoint {value.shape}, model {shape}")
            continue
        else:
            report.loaded_count += value.size
        updates[path] = variable.replace(_placed(value.astype(dtype), variable.get_value()))
        report.loaded.append(name)
    if errors:
        raise ConversionError("cannot merge the checkpoint into the model:\n  " + "\n  ".join(errors))
    merged = nnx.from_flat_state([(p, updates.get(p, v)) for p, v in targets.items()])
    logging.info("merged pretrained parameters: %s", report.summary())
    return merged, report
