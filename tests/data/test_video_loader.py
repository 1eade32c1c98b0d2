"""Real video through the loader: the same clips in the same order for any worker count, exact resume."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pyoco_jax.configs import default

from pyoco_jax.data.loader import make_loader, make_source
from tests.data.videos import BAD_KINDS, write_mixed_folder


def _take(loader, count: int) -> list[dict[str, np.ndarray]]:
    return [jax.tree.map(np.asarray, next(loader)) for _ in range(count)]


def _assert_same(batches, expected) -> None:
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected, strict=True):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _clips_by_file(batches) -> dict[int, np.ndarray]:
    """source_index -> clip, for the elements read directly (not as a fallback for a bad file)."""
    clips = {}
    for batch in batches:
        for index, skipped, video in zip(batch["source_index"], batch["bad_files"], batch["video"], strict=True):
            if not skipped:
                clips[int(index)] = video
    return clips


@pytest.mark.slow
def test_worker_count_does_not_change_the_clips_and_resume_is_exact(tmp_path):
    write_mixed_folder(tmp_path)
    config = default.get_config().data
    config.update(
        source="video_folder",
        path=str(tmp_path),
        num_frames=3,
        resolution=16,
        frame_stride=2,
        temporal_sampling="random",
        crop="random",
        flip=True,
        global_batch_size=4,
        prefetch=2,
        max_failure_fraction=1.0,
    )
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:4]), ("data",)), PartitionSpec("data"))
    source = make_source(config, seed=11)
    with make_loader(config, source, sharding, seed=11) as in_process:
        first = _take(in_process, 2)
        state = json.loads(json.dumps(in_process.get_state()))
        rest = _take(in_process, 4)  # Into the second epoch: new random clips for the same files.
        counts = (in_process.bad_files_total, in_process.reads_total)
    assert counts == (len(BAD_KINDS) * 2, 24 + 12)
    epochs = [_clips_by_file(first + rest[:1]), _clips_by_file(rest[1:])]  # 3 batches of 4 per epoch.
    assert epochs[0].keys() == epochs[1].keys() and len(epochs[0]) == 6
    # The epoch reaches the source: new random starts (8 possible per file; flat frames hide crops and flips).
    assert sum(not np.array_equal(epochs[0][i], epochs[1][i]) for i in epochs[0]) >= 4
    with make_loader(config, source, sharding, seed=11, state=state) as resumed:
        _assert_same(_take(resumed, 4), rest)
    config.worker_count = 2
    with make_loader(config, make_source(config, seed=11), sharding, seed=11) as workers:
        _assert_same(_take(workers, 6), first + rest)
        assert (workers.bad_files_total, workers.reads_total) == counts  # Counted in the workers, summed here.
