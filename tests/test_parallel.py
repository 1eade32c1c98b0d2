"""Mesh shapes, logical-axis rules and shardings (parallel.py), mesh config checks, and cluster detection."""

import logging

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from pyoco_jax.configs import default

from pyoco_jax import distributed, parallel
from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.train.build import build_run
from tests.train.helpers import TINY, fast_config


def _mesh_config(**sizes):
    config = default.get_config().mesh
    for key, value in sizes.items():
        config[key] = value
    return config


def _mesh(data=1, fsdp=1, tensor=1, sequence=1):
    return parallel.make_mesh(
        _mesh_config(data=data, fsdp=fsdp, tensor=tensor, sequence=sequence),
        jax.devices()[: data * fsdp * tensor * sequence],
    )


def test_mesh_shapes_resolve_minus_one_within_and_across_granules():
    assert parallel.mesh_shapes(_mesh_config(fsdp=2), 8) == ((4, 2, 1, 1), (1, 1, 1, 1))
    # Two processes of 4 devices, data across them (DCN): the ICI sizes cover one process.
    hybrid = _mesh_config(dcn_data=2, fsdp=2, sequence=2)
    assert parallel.mesh_shapes(hybrid, 8, num_granules=2) == ((1, 2, 1, 2), (2, 1, 1, 1))
    assert parallel.mesh_shapes(_mesh_config(data=2, dcn_fsdp=-1), 8, num_granules=4) == ((2, 1, 1, 1), (1, 4, 1, 1))
    mesh = parallel.make_mesh(_mesh_config(data=2, fsdp=2, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2, "sequence": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"fsdp": 3}, "cannot be split"),
        ({"data": 2, "fsdp": 2}, "needs 4"),
        ({"dcn_data": 2}, "slices/processes"),
    ],
)
def test_mesh_that_does_not_fit_the_devices_is_a_config_error(sizes, message):
    with pytest.raises(ConfigError, match=message):
        parallel.make_mesh(_mesh_config(**sizes))


@pytest.mark.parametrize(
    "override, key",
    [
        ("mesh.rules=(('heads','tensr'),)", "tensr"),
        ("mesh.rules=(('channels','tensor'),)", "channels"),
        ("mesh.rules=(('heads',),)", "mesh.rules"),
        ("mesh.tensor=0", "mesh.tensor"),
        ("mesh.dcn_fsdp=-2", "mesh.dcn_fsdp"),
        ("mesh.fsdp=-1", "may be -1"),
        ("mesh.sequence=-1", "mesh.sequence"),
        ("mesh.sequence=3", "data.num_frames"),
    ],
)
def test_bad_mesh_settings_fail_when_the_config_loads(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(TINY, [override])


def test_a_mesh_that_does_not_fit_fails_in_train_before_anything_compiles(tmp_path):
    from pyoco_jax.train.trainer import train

    with pytest.raises(ConfigError, match="cannot be split"):
        train(fast_config("mesh.fsdp=3"), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_rules_place_largest_dims_first_skip_used_or_indivisible_axes_and_log_once(caplog):
    mesh = _mesh(data=1, fsdp=2, tensor=4)
    rules = (("embed", "fsdp"), ("mlp", "tensor"), ("mlp", "fsdp"), ("conv_out", ("fsdp", "tensor")), ("norm", None))
    rules = parallel.logical_rules(_mesh_config(rules=rules))
    assert parallel.logical_to_spec(("embed", "mlp"), (64, 256), mesh, rules) == P("fsdp", "tensor")
    # The larger dim takes fsdp first; embed then finds fsdp used and stays whole.
    assert parallel.logical_to_spec(("mlp", "embed"), (6, 64), mesh, rules) == P(None, "fsdp")
    assert parallel.logical_to_spec(("mlp", "embed"), (128, 64), mesh, rules) == P("tensor", "fsdp")
    assert parallel.logical_to_spec(("conv_out",), (16,), mesh, rules) == P(("fsdp", "tensor"))
    assert parallel.logical_to_spec(("norm", "classes"), (64, 8), mesh, rules) == P(None, None)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert parallel.logical_to_spec(("conv_out",), (6,), mesh, rules) == P(None)
    assert sum("not divisible" in record.getMessage() for record in caplog.records) == 1
    one_device = _mesh()  # Axes of size 1 never appear in a spec.
    assert parallel.logical_to_spec(("embed", "mlp"), (64, 256), one_device, rules) == P(None, None)


def test_state_shardings_mirror_params_in_optimizer_state_and_ema():
    config = fast_config()
    parts = build_run(config)
    mesh = _mesh(data=2, fsdp=2, tensor=2)
    specs = parallel.partition_specs(parts.abstract_state, mesh, parallel.logical_rules(config.mesh))
    adam = specs.opt_state[1][0]

    def leaves(tree):
        return jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, P))

    param_specs = leaves(specs.params)
    assert leaves(adam.mu) == param_specs and leaves(adam.nu) == param_specs and leaves(specs.ema) == param_specs
    assert adam.count == P() and specs.step == P() and specs.rng == P()
    assert any(spec != P(*[None] * len(spec)) for spec in param_specs)
    shardings = parallel.state_shardings(parts.abstract_state, mesh, parallel.logical_rules(config.mesh))
    assert jax.tree.structure(shardings) == jax.tree.structure(parts.abstract_state)


def test_batches_split_rows_over_data_axes_and_video_frames_over_sequence():
    mesh = _mesh(data=2, fsdp=2, sequence=2)
    assert parallel.video_spec(mesh) == P(("data", "fsdp"), "sequence")
    assert parallel.video_spec(_mesh(data=8)) == P(("data", "fsdp"))
    assert parallel.batch_sharding(mesh).spec == P(("data", "fsdp"))  # The loader's layout: whole rows.
    example = {"video": np.zeros((4, 8, 8, 3), np.uint8), "label": np.int32(0), "context": np.zeros((77, 8))}
    shardings = parallel.batch_shardings(mesh, {**example, "caption": np.asarray("a red ring")})
    assert shardings.keys() == example.keys()  # Strings never reach the devices.
    assert shardings["video"].spec == P(("data", "fsdp"), "sequence")
    assert shardings["label"].spec == shardings["context"].spec == P(("data", "fsdp"))  # 77 tokens stay whole.
    rows = {name: np.arange(8 * np.size(x)).reshape(8, *np.shape(x)) for name, x in example.items()}
    loaded = jax.device_put(rows, parallel.batch_sharding(mesh))
    placed = parallel.place_batch(loaded, shardings)
    assert {s.data.shape for s in placed["video"].addressable_shards} == {(2, 2, 8, 8, 3)}
    np.testing.assert_array_equal(placed["video"], rows["video"])
    assert placed["label"] is loaded["label"]
    assert parallel.data_parallel_size(mesh) == 4


def test_cluster_detection_from_flags_tpu_and_slurm():
    assert distributed.detect_cluster(environ={}, tpu_chips=False) is None
    flags = distributed.detect_cluster("10.0.0.1:1234", 4, 2, environ={})
    assert (flags.coordinator, flags.num_processes, flags.process_id) == ("10.0.0.1:1234", 4, 2)
    with pytest.raises(ValueError, match="go together"):
        distributed.detect_cluster("10.0.0.1:1234", environ={})
    with pytest.raises(ValueError, match="process_id"):
        distributed.detect_cluster("10.0.0.1:1234", 2, 2, environ={})
    assert distributed.detect_cluster(environ={"TPU_WORKER_HOSTNAMES": "a,b"}).source == "Cloud TPU"
    assert distributed.detect_cluster(environ={}, tpu_chips=True) == distributed.Cluster("Cloud TPU")
    srun = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_NODELIST": "n[1-2]",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "0",
    }
    assert distributed.detect_cluster(environ=srun).detection == "slurm"
    batch_step = {
        "SLURM_JOB_ID": "4097",
        "SLURM_NODELIST": "gpu[003-005,9],cpu1",
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "3",
    }
    cluster = distributed.detect_cluster(environ=batch_step)
    assert (cluster.coordinator, cluster.num_processes, cluster.process_id) == ("gpu003:61441", 4, 3)
    assert distributed.detect_cluster(environ={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, tpu_chips=False) is None
    assert distributed.detect_cluster(environ=batch_step, tpu_chips=False).source == "SLURM"
    assert distributed.first_slurm_host("node[001,007-015],host2") == "node001"
    assert distributed.first_slurm_host("host7,host8") == "host7"


def test_fingerprint_differences_name_each_key_and_process():
    config = fast_config()
    changed = fast_config("optim.learning_rate=0.5")
    prints = [distributed.fingerprint(config), distributed.fingerprint(config), distributed.fingerprint(changed)]
    assert {"code: git commit", "code: source digest", "config: mesh.rules"} <= prints[0].keys()
    assert distributed.differences(prints[:2]) == []
    assert distributed.differences(prints) == ["config: optim.learning_rate: process 0 has 0.001, process 2 has 0.5"]


def test_tpu_chips_are_found_by_pci_vendor_and_device_id(tmp_path):
    def add(name, vendor, device):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vendor").write_text(vendor + "\n")
        (tmp_path / name / "device").write_text(device + "\n")

    add("0000:00:04.0", "0x1af4", "0x1000")  # virtio
    add("0000:00:05.0", "0x1ae0", "0x0042")  # Google's gVNIC: same vendor, not a TPU
    (tmp_path / "0000:00:07.0").mkdir()  # No readable ids.
    assert not distributed.tpu_chips_present(str(tmp_path))
    add("0000:00:06.0", "0x1ae0", "0x0062")  # TPU v5p
    assert distributed.tpu_chips_present(str(tmp_path))
    assert not distributed.tpu_chips_present(str(tmp_path / "absent"))
