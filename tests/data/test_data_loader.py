"""The grain loader: per-host shards, global sharded batches, exact resume, worker-count independence."""

import json
import time

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pyoco_jax.configs import default

from pyoco_jax.data.loader import Loader, host_dataset, make_loader
from pyoco_jax.data.synthetic import SyntheticVideoSource


class IndexSource:
    """Elements that name their own index, so tests can see exactly which ones a batch holds."""

    def __init__(self, size: int, fail_at: int = -1, delay: float = 0.0):
        self.size, self.fail_at, self.delay = size, fail_at, delay

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if index == self.fail_at:
            raise KeyError(f"broken element {index}")
        time.sleep(self.delay)
        return {"index": np.asarray(index, np.int32), "video": np.full((2, 3, 3, 3), index % 251, np.uint8)}


def _data_sharding() -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))


def _local_indices(source, *, process_index, process_count, num_batches, **kwargs) -> np.ndarray:
    dataset = host_dataset(source, process_index=process_index, process_count=process_count, **kwargs)
    return np.stack([dataset[i]["index"] for i in range(num_batches)])


def test_hosts_read_disjoint_shares_that_cover_each_epoch():
    source = IndexSource(48)
    common = dict(global_batch_size=8, seed=5, num_batches=12)  # 12 global batches = 2 epochs.
    host0, host1 = (_local_indices(source, process_index=p, process_count=2, **common) for p in (0, 1))
    assert host0.shape == (12, 4)
    for epoch in (slice(0, 6), slice(6, 12)):
        a, b = host0[epoch].ravel(), host1[epoch].ravel()
        assert not set(a) & set(b)
        assert sorted(np.concatenate([a, b])) == list(range(48))
    assert not np.array_equal(host0[:6], host0[6:])  # A new permutation each epoch.
    single = _local_indices(source, process_index=0, process_count=1, **common)
    np.testing.assert_array_equal(np.concatenate([host0, host1], axis=1), single)  # Same global batch for any P.
    unshuffled = _local_indices(source, process_index=0, process_count=1, shuffle=False, **common)
    np.testing.assert_array_equal(unshuffled.ravel(), np.arange(96) % 48)


def test_batch_size_must_split_over_hosts_and_devices():
    with pytest.raises(ValueError, match="multiple of the process count"):
        host_dataset(IndexSource(10), global_batch_size=7, process_index=0, process_count=2, seed=0)
    with pytest.raises(ValueError, match="data-parallel shards"):
        Loader(IndexSource(10), _data_sharding(), global_batch_size=6, seed=0)


@pytest.mark.parametrize(
    "axes, spec", [(("data",), PartitionSpec("data")), (("data", "fsdp"), PartitionSpec(("data", "fsdp")))]
)
def test_batches_are_global_arrays_on_the_sharding(axes, spec):
    mesh = Mesh(np.array(jax.devices()).reshape((8,) if len(axes) == 1 else (4, 2)), axes)
    sharding = NamedSharding(mesh, spec)
    source = SyntheticVideoSource(32, 4, 16, num_classes=3)
    with Loader(source, sharding, global_batch_size=16, seed=1) as loader:
        batch = next(loader)
    assert set(batch) == {"video", "label", "fps"}
    video, label = batch["video"], batch["label"]
    assert isinstance(video, jax.Array) and video.shape == (16, 4, 16, 16, 3) and video.dtype == np.uint8
    assert label.shape == (16,) and label.dtype == np.int32 and batch["fps"].dtype == np.float32
    assert video.sharding.is_equivalent_to(sharding, 5) and label.sharding.is_equivalent_to(sharding, 1)
    assert {shard.data.shape for shard in video.addressable_shards} == {(2, 4, 16, 16, 3)}
    expected = host_dataset(source, global_batch_size=16, process_index=0, process_count=1, seed=1)[0]
    np.testing.assert_array_equal(np.asarray(video), expected["video"])
    np.testing.assert_array_equal(np.asarray(label), expected["label"])


def _take(loader: Loader, count: int) -> list[np.ndarray]:
    return [np.asarray(next(loader)["index"]) for _ in range(count)]


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_is_exact_despite_prefetch(prefetch):
    source, sharding = IndexSource(40), _data_sharding()
    with Loader(source, sharding, global_batch_size=8, seed=2, prefetch=prefetch) as loader:
        _take(loader, 7)  # Crosses an epoch boundary.
        state = json.loads(json.dumps(loader.get_state()))
        time.sleep(0.05)  # Let the prefetch thread run ahead.
        expected = _take(loader, 4)
        loader.set_state(state)
        np.testing.assert_array_equal(_take(loader, 4), expected)
    with Loader(source, sharding, global_batch_size=8, seed=2, prefetch=prefetch, state=state) as restored:
        np.testing.assert_array_equal(_take(restored, 4), expected)
    with Loader(source, sharding, global_batch_size=8, seed=2, prefetch=prefetch) as fresh:
        assert not np.array_equal(_take(fresh, 4), expected)


def test_worker_processes_give_identical_batches_and_resume():
    config = default.get_config().data
    config.update(num_examples=24, num_frames=2, resolution=8, num_classes=3, global_batch_size=8, prefetch=2)
    source, sharding = SyntheticVideoSource(24, 2, 8, num_classes=3), _data_sharding()
    with make_loader(config, source, sharding, seed=4) as in_process:
        first = [jax.tree.map(np.asarray, next(in_process)) for _ in range(3)]
        state = in_process.get_state()
        rest = [jax.tree.map(np.asarray, next(in_process)) for _ in range(3)]
    config.worker_count = 2
    with make_loader(config, source, sharding, seed=4) as workers:
        for expected in first + rest:
            jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, next(workers)), expected)
    with make_loader(config, source, sharding, seed=4, state=state) as resumed:
        for expected in rest:
            jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, next(resumed)), expected)


def test_state_from_another_stream_is_refused():
    sharding = _data_sharding()
    with Loader(IndexSource(40), sharding, global_batch_size=8, seed=2, prefetch=0) as loader:
        next(loader)
        state = loader.get_state()
    assert state["position"] == 8
    with pytest.raises(ValueError, match="seed"):
        Loader(IndexSource(40), sharding, global_batch_size=8, seed=3, state=state)
    with pytest.raises(ValueError, match="num_examples"):
        Loader(IndexSource(41), sharding, global_batch_size=8, seed=2, state=state)


def test_wait_time_is_measured():
    with Loader(IndexSource(16, delay=0.01), _data_sharding(), global_batch_size=8, seed=0, prefetch=0) as loader:
        next(loader)
        assert loader.last_wait_seconds >= 0.04 and loader.total_wait_seconds == loader.last_wait_seconds
        next(loader)
        assert loader.total_wait_seconds > loader.last_wait_seconds


def test_source_errors_reach_the_caller():
    with Loader(IndexSource(16, fail_at=3), _data_sharding(), global_batch_size=8, seed=0, shuffle=False) as loader:
        with pytest.raises(RuntimeError, match="loading a data batch failed") as caught:
            next(loader)
        assert "broken element 3" in repr(caught.value.__cause__)
        with pytest.raises(RuntimeError, match="failed earlier"):
            next(loader)
