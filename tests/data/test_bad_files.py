"""Bad files are skipped, counted exactly, logged once, and too many of them stop the run naming files."""

import logging
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.data.clip_sampling import ClipSpec
from pyoco_jax.data.loader import DataFailureError, Loader, host_dataset
from pyoco_jax.data.video_folder import VideoFolderSource
from pyoco_jax.data.video_source import TooManyBadFilesError
from tests.data.videos import BAD_KINDS, frame_codes, write_mixed_folder

SPEC = ClipSpec(4, 16, 16, temporal="center")  # Centred in GOOD_FRAMES = 12: good file k gives codes 4k + 4..4k + 7.


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    return str(folder), write_mixed_folder(folder)


def _sharding() -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()[:4]), ("data",)), PartitionSpec("data"))


def test_each_bad_file_is_skipped_for_the_next_one_and_reported(mixed, caplog):
    folder, names = mixed
    source = VideoFolderSource(folder, SPEC, with_captions=True)
    bad = {i for i, name in enumerate(names) if name in BAD_KINDS}
    caplog.set_level(logging.WARNING)
    for epoch in range(2):
        for index in range(len(names)):
            element = source.read(index, epoch)
            used = (index + 1) % len(names) if index in bad else index  # Each bad row is followed by a good one.
            assert element["bad_files"] == (index in bad) and element["source_index"] == used
            assert element["caption"] == f"caption {used}" and element["label"] == used % 3
            k = int(names[used].removeprefix("good_").removesuffix(".mp4"))
            assert frame_codes(element["video"]).tolist() == [4 * k + 4 + f for f in range(4)]
    assert sorted(source.failures) == sorted(bad)
    for index in bad:
        name = names[index]
        failure = source.failures[index]
        assert failure.startswith(os.path.join(folder, name)) and BAD_KINDS[name] in failure
        assert sum(name in record.getMessage() for record in caplog.records) == 1  # Logged once, not per epoch.


def test_training_through_the_loader_counts_every_bad_file(mixed):
    folder, names = mixed
    source = VideoFolderSource(folder, SPEC, with_captions=True)
    expected = host_dataset(source, global_batch_size=4, process_index=0, process_count=1, seed=3)
    loader = Loader(source, _sharding(), global_batch_size=4, seed=3, max_failure_fraction=0.5, failure_min_reads=1)
    with loader:
        for n in range(6):  # Two epochs of 12.
            batch = next(loader)
            assert set(batch) == {"video", "label", "fps", "bad_files", "source_index"}  # Captions stay home.
            assert loader.last_bad_files == int(expected[n]["bad_files"].sum()) == int(batch["bad_files"].sum())
            np.testing.assert_array_equal(np.asarray(batch["video"]), expected[n]["video"])
        assert loader.bad_files_total == 2 * len(BAD_KINDS) == 12 and loader.reads_total == 36


def test_too_many_failures_stop_with_an_error_naming_files(mixed):
    folder, _ = mixed
    source = VideoFolderSource(folder, SPEC)
    loader = Loader(source, _sharding(), global_batch_size=4, seed=3, max_failure_fraction=0.2, failure_min_reads=12)
    with loader:
        next(loader)  # 4 + bad reads < 12: not judged yet.
        expected = r"reads on this host failed .* data.max_failure_fraction=0.2"
        with pytest.raises(DataFailureError, match=expected) as caught:
            for _ in range(3):
                next(loader)
        message = str(caught.value)
        assert sum(os.path.join(folder, name) in message for name in BAD_KINDS) >= 2
        assert any(reason in message for reason in BAD_KINDS.values())
        with pytest.raises(RuntimeError, match="failed earlier"):
            next(loader)


def test_a_run_of_only_bad_files_fails_fast_naming_them(tmp_path):
    (tmp_path / "metadata.csv").write_text("path\nnone_1.mp4\nnone_2.mp4\n")
    source = VideoFolderSource(str(tmp_path), SPEC)
    with pytest.raises(TooManyBadFilesError, match="2 videos in a row failed.*none_1.mp4: FileNotFoundError"):
        source[0]
