"""Orbax checkpoints of a run's state, its data iterator state and its config, for every trainer.

Saves are asynchronous; the last K are kept plus every M-th step. Restoring
onto a mesh needs only an abstract target carrying that mesh's shardings.
A damaged checkpoint (a truncated file after a full disk or a kill mid-copy) is
skipped on resume: the newest one that restores wins, and the damaged ones are
moved aside, never deleted.
"""

import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from pyoco_jax.config import with_defaults
from pyoco_jax.errors import UserError
from pyoco_jax.paths import absolute

ITEMS = ("state", "data", "config")
DAMAGED = ".damaged"  # Suffix of a step folder that failed to restore, moved aside so its step can be saved again.
CHECKPOINTS = "checkpoints"  # The folder of a workdir that holds its step folders.
PyTree = Any


class CheckpointRestoreError(UserError):
    """Checkpoints exist in a workdir but none of them restores; the message names the folder."""


def _write_whole_replicas_on_cpu() -> None:
    """On host devices, each replicated shard is written by one device.

    Orbax's default (replica-parallel) splits every replicated array between its replicas with one
    eager slice per replica: thousands of dispatches per save of a small model sharded over CPU
    devices (17 s for the 8-device test state). Accelerators keep the default.
    """
    if jax.default_backend() == "cpu":
        handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _first_line(error: Exception) -> str:
    """Orbax's restore errors carry the whole TensorStore spec; the first line says what failed."""
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


class Checkpointer:
    """One manager per workdir: `<workdir>/checkpoints/<step>/{state,data,config}`.

    `state` is any pytree of arrays: the U-Net trainer's TrainState, the VideoVAE fine-tune's state.
    """

    def __init__(self, workdir: str, train_config: ml_collections.ConfigDict | None = None):
        """With no `train_config` the manager only reads (sampling, export)."""
        _write_whole_replicas_on_cpu()
        self._read_only = train_config is None
        if self._read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max(int(train_config.keep_checkpoints), 1),
                keep_period=int(train_config.keep_every) or None,
                enable_async_checkpointing=True,
                create=True,
            )
        self.directory = epath.Path(absolute(workdir)) / CHECKPOINTS  # Orbax refuses relative paths.
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: PyTree, data_state: dict, config: ml_collections.ConfigDict) -> None:
        """Starts an async save; returns once device buffers are copied (state may be donated after)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(json.loads(config.to_json())),
        )
        self._manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
        """The state laid out as `abstract_state` says (shape, dtype, sharding), and the data state."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
        )
        restored = self._manager.restore(step, args=args)
        return restored["state"], restored["data"]

    def restore_latest(self, abstract_state: PyTree) -> tuple[int, PyTree, dict] | None:
        """(step, state, data state) of the newest checkpoint that restores; None if there is none.

        A checkpoint that fails to restore is logged and the one before it is tried. Once an older one
        restores, the newer damaged ones are renamed `<step>.damaged` (kept for inspection; Orbax ignores
        them), since Orbax refuses to save a step whose folder exists and the resumed run will reach
        those steps again. If none restores, nothing is moved (the cause is more likely a changed config
        than damage everywhere) and CheckpointRestoreError names the folder.
        """
        damaged: list[tuple[int, Exception]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, data_state = self.restore(step, abstract_state)
            except Exception as error:  # TensorStore raises plain Exceptions for damaged files.
                logging.warning(
                    "The checkpoint at step %d (%s) does not restore: %s",
                    step,
                    self.directory / str(step),
                    _first_line(error),
                )
                damaged.append((step, error))
                continue
            if damaged:
                self._move_aside([bad for bad, _ in damaged])
                logging.warning("Resuming from step %d, the newest checkpoint that restores.", step)
            return step, state, data_state
        if not damaged:
            return None
        newest, error = damaged[0]
        raise CheckpointRestoreError(
            f"none of the checkpoints in {self.directory} (steps {[step for step, _ in damaged]}) restores; the "
            f"newest, step {newest}, failed with: {_first_line(error)}. If the config changed since they were "
            f"saved, rerun with the saved one ({self.directory}/<step>/config); otherwise move the step folders "
            "out of that folder to start over."
        ) from error

    def _move_aside(self, steps: list[int]) -> None:
        """Renames each step folder to `<step>.damaged` (or `<step>.damaged.<n>` if taken); read-only: nothing."""
        if self._read_only:
            return
        if jax.process_index() == 0:
            for step in steps:
                source = self.directory / str(step)
                target, n = self.directory / f"{step}{DAMAGED}", 1
                while target.exists():
                    target, n = self.directory / f"{step}{DAMAGED}.{n}", n + 1
                source.rename(target)
                logging.warning("Moved the damaged checkpoint %s aside to %s (kept, not deleted).", source, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("pyoco_jax checkpoints moved aside")
        self._manager.reload()

    def restore_subset(self, step: int, abstract_subset: dict) -> dict:
        """Only the named fields of the saved state (e.g. params and frozen, not the optimizer state)."""
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_subset)
        item = ocp.args.PyTreeRestore(item=abstract_subset, restore_args=restore_args, partial_restore=True)
        return self._manager.restore(step, args=ocp.args.Composite(state=item))["state"]

    def restore_config(self, step: int) -> ml_collections.ConfigDict:
        restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return with_defaults(restored["config"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs carrying `shardings`: the target Orbax restores into."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
