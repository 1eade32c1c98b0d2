"""The DiT's train step sharded over fsdp, tensor and sequence (frames, hence tokens, split over devices) equals
the one-device step, with LoRA adapters and their per-example dropout, so neither depends on the mesh."""

import jax
import numpy as np

from pyoco_jax import parallel
from pyoco_jax.config import load_config
from pyoco_jax.data.loader import host_dataset, make_source
from pyoco_jax.train.build import build_run, sharded_step
from tests.convert.test_dit_export import SMALL_DIT
from tests.train.helpers import REPO, flat_arrays

STEPS = 2
MESHES = {"1 device": (1, 1, 1), "fsdp=2 tensor=2 sequence=2": (2, 2, 2)}  # (fsdp, tensor, sequence)
LORA = ["model.lora.rank=4", "model.lora.dropout=0.25", "optim.warmup_steps=0", "optim.schedule=constant"]


def _config(mesh_name: str):
    fsdp, tensor, sequence = MESHES[mesh_name]
    mesh = ["mesh.data=1", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}", f"mesh.sequence={sequence}"]
    return load_config(str(REPO / "configs" / "tiny_dit.py"), [*SMALL_DIT, "data.global_batch_size=4", *LORA, *mesh])


def _moved(state):
    """Every parameter moved off its init: a fresh DiT's zero head would give the adapters no gradient."""
    rng = np.random.default_rng(0)
    move = lambda x: (x + 0.1 * rng.standard_normal(x.shape)).astype(x.dtype)
    return state.replace(params=jax.tree.map(move, state.params), frozen=jax.tree.map(move, state.frozen))


def _train(mesh_name: str, initial, batches, example):
    config = _config(mesh_name)
    parts = build_run(config)
    mesh = parallel.make_mesh(config.mesh, jax.devices()[: np.prod(MESHES[mesh_name])])
    step = sharded_step(parts, config, mesh, example)
    state, losses = jax.device_put(initial, step.state_sharding), []
    for batch in batches:
        state, metrics = step.fn(state, jax.device_put(batch, step.batch_sharding))
        losses.append(float(metrics["loss"]))
    return losses, flat_arrays(state)


def test_sharded_dit_lora_step_equals_one_device():
    config = _config("1 device")
    parts = build_run(config)
    initial = _moved(jax.device_get(jax.jit(lambda: parts.init_state(config))()))
    source = make_source(config.data, seed=config.seed)
    stream = host_dataset(source, global_batch_size=4, process_index=0, process_count=1, seed=config.seed)
    batches = [stream[n] for n in range(STEPS)]
    reference_losses, reference = _train("1 device", initial, batches, source[0])
    losses, state = _train("fsdp=2 tensor=2 sequence=2", initial, batches, source[0])
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    moved = [name for name in reference if ".params" in name and np.any(reference[name] != flat_arrays(initial)[name])]
    assert moved and all("lora" in name for name in moved)  # The adapters trained, and only they.
    for name, want in reference.items():
        scale = max(float(np.abs(want).max()), 1e-3) if want.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(state[name], want, rtol=0, atol=5e-5 * scale, err_msg=name)
