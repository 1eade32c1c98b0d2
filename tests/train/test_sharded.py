"""Sharded training on the 8 fake CPU devices equals one device; checkpoints move between meshes.

Tolerances: losses agree to rtol 1e-5 and every state array (params, Adam moments, EMA) to
atol 5e-5 times its own scale: sharding only changes the order of float32 reductions (measured:
loss rel. diff <= 3e-7, state diff / scale <= 1.1e-5, largest on near-zero params Adam just moved).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from pyoco_jax import parallel
from pyoco_jax.train.build import build_run, sharded_step
from pyoco_jax.train.checkpoint import Checkpointer, abstract_like
from tests.train.helpers import (
    MESHES,
    SHARDED_STEPS,
    flat_arrays,
    make_test_mesh,
    mesh_config,
    run_start,
    small_config,
    train_on_mesh,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mesh_name", [name for name in MESHES if name != "1 device"])
def test_sharded_training_matches_one_device(mesh_name):
    reference_losses, reference, _ = train_on_mesh("1 device")
    losses, state, _ = train_on_mesh(mesh_name)
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    assert len(set(reference_losses)) == SHARDED_STEPS  # The steps did change the loss.
    expected, actual = flat_arrays(reference), flat_arrays(state)
    assert expected.keys() == actual.keys()
    worst = 0.0
    for name, want in expected.items():
        scale = max(float(np.abs(want).max()), 1e-3) if want.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(actual[name], want, rtol=0, atol=5e-5 * scale, err_msg=name)
        if want.dtype.kind == "f":
            worst = max(worst, float(np.abs(actual[name] - want).max()) / scale)
    loss_diff = np.max(np.abs(np.subtract(losses, reference_losses)) / np.abs(reference_losses))
    print(f"{mesh_name}: loss max rel diff {loss_diff:.2e}, state max diff / scale {worst:.2e}")


def test_fsdp_and_tensor_axes_really_shard_the_state():
    _, state, parts = train_on_mesh("data=2 fsdp=2 tensor=2")
    params = state.params
    geglu = params["down_blocks"][1]["attentions"][0]["transformer_blocks"][0]["ff"]["geglu"]["kernel"]
    assert geglu.shape == (16, 128) and geglu.sharding.spec == PartitionSpec("fsdp", "tensor")
    assert {s.data.shape for s in geglu.addressable_shards} == {(8, 64)}
    conv = params["down_blocks"][1]["resnets"][0]["conv2"]["kernel"]  # (3, 3, 16, 16): conv_in on fsdp, out on tensor
    assert {s.data.shape for s in conv.addressable_shards} == {(3, 3, 8, 8)}
    adam = state.opt_state[1][0]  # (clip, adamw) -> ScaleByAdamState
    for moment in (adam.mu, adam.nu):
        mirrored = moment["down_blocks"][1]["attentions"][0]["transformer_blocks"][0]["ff"]["geglu"]["kernel"]
        assert mirrored.sharding == geglu.sharding
    assert state.ema["down_blocks"][1]["resnets"][0]["conv2"]["kernel"].sharding == conv.sharding
    assert adam.count.sharding.is_fully_replicated and state.step.sharding.is_fully_replicated
    full = sum(x.nbytes for x in jax.tree.leaves(params))
    per_device = parallel.bytes_per_device(params, jax.tree.map(lambda x: x.sharding, params))
    assert per_device == sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(params))
    assert per_device < 0.4 * full, (per_device, full)


def test_checkpoint_restores_onto_another_mesh_and_one_device(tmp_path):
    _, state, parts = train_on_mesh("data=2 fsdp=2 tensor=2")
    config = mesh_config("data=2 fsdp=2 tensor=2")
    checkpointer = Checkpointer(str(tmp_path), config.train)
    checkpointer.save(SHARDED_STEPS, state, {"position": 0}, config)
    checkpointer.wait()
    saved = flat_arrays(state)
    for mesh_name in ("data=2 fsdp=4", "1 device"):
        rules = parallel.logical_rules(mesh_config(mesh_name).mesh)
        shardings = parallel.state_shardings(parts.abstract_state, make_test_mesh(mesh_name), rules)
        restored, data_state = checkpointer.restore(SHARDED_STEPS, abstract_like(parts.abstract_state, shardings))
        assert data_state == {"position": 0}
        for name, value in flat_arrays(restored).items():
            np.testing.assert_array_equal(value, saved[name], err_msg=f"{mesh_name}: {name}")
        for array, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True):
            assert array.sharding == sharding
    checkpointer.close()


def test_bfloat16_compute_keeps_params_optimizer_ema_and_loss_float32():
    config = small_config("model.dtype=bfloat16", "mesh.data=1")
    _, _, example = run_start()
    parts = build_run(config)
    step = sharded_step(parts, config, parallel.make_mesh(config.mesh, jax.devices()[:1]), example)
    state, batch = step.abstract_inputs(parts.abstract_state, example, config.data.global_batch_size)
    new_state, metrics = jax.eval_shape(step.fn, state, batch)
    for tree in (new_state.params, new_state.opt_state, new_state.ema):
        assert {x.dtype for x in jax.tree.leaves(tree) if x.ndim} == {jnp.dtype(jnp.float32)}
    assert metrics["loss"].dtype == jnp.float32 and metrics["grad_norm"].dtype == jnp.float32
    lines = step.fn.lower(state, batch).as_text().splitlines()
    both_bf16 = re.compile(r": \(tensor<[^>]*bf16>, tensor<[^>]*bf16>\)")
    convolutions = [line for line in lines if "stablehlo.convolution" in line]
    assert convolutions and all(both_bf16.search(line) for line in convolutions)
    # Every layer matmul and its gradients; the one float32 matmul left is the noise prior's (precision HIGHEST).
    matmuls = [line for line in lines if "stablehlo.dot_general" in line and "batching_dims" not in line]
    assert len(matmuls) > 50 and all(both_bf16.search(line) or "HIGHEST" in line for line in matmuls)


def test_remat_traces_with_frozen_params():
    """Rematerialised blocks see trained and frozen params from different traces; the step must still build."""
    config = small_config("model.remat=full", "optim.trainable=temporal", "mesh.data=1")
    _, _, example = run_start()
    parts = build_run(config)
    step = sharded_step(parts, config, parallel.make_mesh(config.mesh, jax.devices()[:1]), example)
    state, batch = step.abstract_inputs(parts.abstract_state, example, config.data.global_batch_size)
    new_state, _ = jax.eval_shape(step.fn, state, batch)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
