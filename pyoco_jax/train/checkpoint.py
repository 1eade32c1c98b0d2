"""Orbax checkpoints of the train state, the data iterator state and the config.

Saves are asynchronous; the last K are kept plus every M-th step. Restoring
onto a mesh needs only an abstract target carrying that mesh's shardings.
"""

import json

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from pyoco_jax.config import with_defaults
from pyoco_jax.train.state import TrainState

ITEMS = ("state", "data", "config")


def _write_whole_replicas_on_cpu() -> None:
    """On host devices, each replicated shard is written by one device.

    Orbax's default (replica-parallel) splits every replicated array between its replicas with one
    eager slice per replica: thousands of dispatches per save of a small model sharded over CPU
    devices (17 s for the 8-device test state). Accelerators keep the default.
    """
    if jax.default_backend() == "cpu":
        handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


class Checkpointer:
    """One manager per workdir: `<workdir>/checkpoints/<step>/{state,data,config}`."""

    def __init__(self, workdir: str, train_config: ml_collections.ConfigDict | None = None):
        """With no `train_config` the manager only reads (sampling, export)."""
        _write_whole_replicas_on_cpu()
        if train_config is None:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max(int(train_config.keep_checkpoints), 1),
                keep_period=int(train_config.keep_every) or None,
                enable_async_checkpointing=True,
                create=True,
            )
        self.directory = epath.Path(workdir) / "checkpoints"
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: TrainState, data_state: dict, config: ml_collections.ConfigDict) -> None:
        """Starts an async save; returns once device buffers are copied (state may be donated after)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(json.loads(config.to_json())),
        )
        self._manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
        """The state laid out as `abstract_state` says (shape, dtype, sharding), and the data state."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
        )
        restored = self._manager.restore(step, args=args)
        return restored["state"], restored["data"]

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
