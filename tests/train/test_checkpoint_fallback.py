"""A damaged newest checkpoint: resume falls back to the newest one that restores and moves the damaged one aside."""

import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pyoco_jax.train.checkpoint import Checkpointer, CheckpointRestoreError, abstract_like
from pyoco_jax.train.trainer import train
from tests.train.helpers import checkpoint_steps, fast_config, small_config

# Orbax abandons the other reads of a checkpoint that fails; Python reports their coroutines when it collects them.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def damage(workdir: pathlib.Path, step: int) -> None:
    """Truncates every data file of a step's state to half, as a full disk or a kill mid-copy leaves them.

    Data files are the OCDBT ones under `d/` folders (the JSON `_METADATA` of a U-Net state is not needed
    to restore onto a target). Every one, since a sharded save may leave some that a restore never reads.
    """
    files = [path for path in (workdir / "checkpoints" / str(step) / "state").rglob("*") if path.parent.name == "d"]
    assert files, f"no OCDBT data files in step {step}"
    for path in files:
        os.truncate(path, path.stat().st_size // 2)


def _state(step: int) -> dict:
    """Random values: OCDBT compresses its data files, and constants would leave nothing to truncate."""
    return {"w": jax.random.normal(jax.random.PRNGKey(step), (4096,)), "step": jnp.asarray(step, jnp.int32)}


def _abstract(state: dict) -> dict:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return abstract_like(state, jax.tree.map(lambda _: device, state))


def _save(workdir: pathlib.Path, steps: list[int]) -> None:
    config = fast_config("train.keep_checkpoints=5")
    checkpointer = Checkpointer(str(workdir), config.train)
    for step in steps:
        checkpointer.save(step, _state(step), {"position": step}, config)
    checkpointer.wait()
    checkpointer.close()


def _warnings(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)


def test_falls_back_to_the_newest_that_restores_and_saves_that_step_again(tmp_path, caplog):
    _save(tmp_path, [2, 4])
    damage(tmp_path, 4)
    config = fast_config("train.keep_checkpoints=5")
    checkpointer = Checkpointer(str(tmp_path), config.train)
    step, state, data_state = checkpointer.restore_latest(_abstract(_state(0)))
    assert step == 2 and data_state == {"position": 2}
    np.testing.assert_array_equal(state["w"], _state(2)["w"])
    damaged = tmp_path / "checkpoints" / "4"
    assert f"step 4 ({damaged})" in _warnings(caplog)
    assert (tmp_path / "checkpoints" / "4.damaged" / "state").is_dir()  # Moved aside, not deleted.
    assert f"aside to {damaged}.damaged" in _warnings(caplog)

    checkpointer.save(4, _state(40), {"position": 4}, config)  # The resumed run reaches step 4 again.
    checkpointer.wait()
    checkpointer.close()
    reopened = Checkpointer(str(tmp_path), config.train)
    assert reopened.all_steps() == [2, 4]
    step, state, _ = reopened.restore_latest(_abstract(_state(0)))
    reopened.close()
    assert step == 4 and int(state["step"]) == 40
    assert (tmp_path / "checkpoints" / "4.damaged").is_dir()


def test_when_none_restores_the_error_names_the_folder_and_nothing_moves(tmp_path):
    _save(tmp_path, [2, 4])
    damage(tmp_path, 2)
    damage(tmp_path, 4)
    checkpointer = Checkpointer(str(tmp_path), fast_config().train)
    with pytest.raises(CheckpointRestoreError, match=f"none of the checkpoints in {tmp_path / 'checkpoints'}"):
        checkpointer.restore_latest(_abstract(_state(0)))
    checkpointer.close()
    assert checkpoint_steps(tmp_path) == [2, 4]


def test_no_checkpoint_is_a_new_run(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), fast_config().train)
    assert checkpointer.restore_latest(_abstract(_state(0))) is None
    checkpointer.close()


@pytest.mark.slow
def test_trainer_resumes_from_the_older_checkpoint(tmp_path, caplog):
    """The small config's constant learning rate: both runs share one compiled step."""
    steps = ["train.checkpoint_every=2", "train.keep_checkpoints=5"]
    train(small_config("train.num_steps=4", *steps), str(tmp_path))
    assert checkpoint_steps(tmp_path) == [2, 4]
    damage(tmp_path, 4)
    with caplog.at_level(logging.INFO):
        train(small_config("train.num_steps=6", *steps), str(tmp_path))
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert f"step 4 ({tmp_path / 'checkpoints' / '4'}) does not restore" in messages
    assert "Resumed from the checkpoint at step 2" in messages
    assert (tmp_path / "checkpoints" / "4.damaged" / "state").is_dir()
    assert checkpoint_steps(tmp_path) == [2, 4, 6]  # Step 4 saved again by the resumed run.


def test_a_relative_workdir_is_made_absolute_for_orbax(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(Checkpointer("runs/tiny").directory) == str(tmp_path / "runs" / "tiny" / "checkpoints")
