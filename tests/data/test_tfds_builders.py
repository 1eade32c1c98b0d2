"""TFDS builders (array_record, no TensorFlow): a video folder and a small fake UCF-101, read back into grain."""

import os
import zipfile

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pyoco_jax.configs import default

from pyoco_jax.data.builders import prepare_ucf101, prepare_video_folder
from pyoco_jax.data.builders.ucf101 import class_caption, parse_class_index, parse_split_list
from pyoco_jax.data.clip_sampling import ClipSpec
from pyoco_jax.data.loader import make_loader, make_source
from pyoco_jax.data.tfds_source import TfdsVideoSource
from pyoco_jax.data.video_folder import VideoFolderSource
from tests.data.videos import BAD_KINDS, coded_frames, frame_codes, write_avi, write_mixed_folder

SPEC = ClipSpec(4, 16, 16, temporal="center")
CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def _sharding() -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()[:2]), ("data",)), PartitionSpec("data"))


def _data_config(**overrides):
    config = default.get_config().data
    config.update(num_frames=4, resolution=16, temporal_sampling="center", global_batch_size=2, **overrides)
    return config


def test_video_folder_dataset_reads_back_like_the_folder(tmp_path):
    tfds.disable_progress_bar()
    names = write_mixed_folder(tmp_path / "videos")
    prepare_video_folder(str(tmp_path / "videos"), str(tmp_path / "tfds"))
    source = TfdsVideoSource("pyoco_video_folder", SPEC, data_dir=str(tmp_path / "tfds"), with_captions=True)
    folder = VideoFolderSource(str(tmp_path / "videos"), SPEC, with_captions=True)
    assert len(source) == len(names) - 1  # The missing file has no record.
    seen = set()
    for index in range(len(source)):
        path = source.record(index).name
        row = names.index(path)
        seen.add(path)
        assert source.caption(index) == f"caption {row}" and source.record(index).label == row % 3
        if path in BAD_KINDS:
            assert source[index]["bad_files"] >= 1  # Stored as it was, skipped when read.
        else:
            element, expected = source[index], folder.clip(row)
            assert element["bad_files"] == 0 and element["caption"] == expected["caption"]
            np.testing.assert_array_equal(element["video"], expected["video"])  # Same bytes, same decode.
            assert element["label"] == expected["label"] and element["fps"] == expected["fps"]
    assert seen == set(names) - {"missing.mp4"}
    failed = {source.record(i).name for i in source.failures}
    assert failed == set(BAD_KINDS) - {"missing.mp4"}

    config = _data_config(source="tfds", tfds_name="pyoco_video_folder", tfds_data_dir=str(tmp_path / "tfds"))
    with make_loader(config, make_source(config, seed=0), _sharding(), seed=0) as loader:
        batches = [next(loader) for _ in range(6)]  # 12 reads > one epoch of 11.
    assert all(batch["video"].shape == (2, 4, 16, 16, 3) for batch in batches)
    assert loader.bad_files_total >= len(BAD_KINDS) - 1


def _fake_ucf101(root, *, zipped: bool) -> dict[str, int]:
    """3 classes x 3 groups of one clip; group g of class c is coded 3c + g. Split N tests on group N."""
    lists = {"classInd.txt": "".join(f"{i + 1} {name}\r\n" for i, name in enumerate(CLASSES))}
    codes = {}
    for c, name in enumerate(CLASSES):
        os.makedirs(root / "UCF-101" / name)
        file_class = "HandStandPushups" if name == "HandstandPushups" else name  # As in the official files.
        for g in (1, 2, 3):
            path = f"{name}/v_{file_class}_g0{g}_c01.avi"
            codes[path] = 3 * c + g
            write_avi(root / "UCF-101" / path, coded_frames(3 * c + g + 1, 48, 64)[-1:].repeat(20, axis=0), 25)
            for split in (1, 2, 3):
                test = g == split
                line = f"{path}\r\n" if test else f"{path} {c + 1}\r\n"
                key = f"{'test' if test else 'train'}list0{split}.txt"
                lists[key] = lists.get(key, "") + line
    if zipped:
        with zipfile.ZipFile(root / "UCF101TrainTestSplits-RecognitionTask.zip", "w") as archive:
            for name, text in lists.items():
                archive.writestr(f"ucfTrainTestlist/{name}", text)
    else:
        os.makedirs(root / "ucfTrainTestlist")
        for name, text in lists.items():
            (root / "ucfTrainTestlist" / name).write_text(text)
    return codes


@pytest.mark.parametrize("zipped", [True, False])
def test_ucf101_builder_reads_the_official_layout(tmp_path, zipped):
    tfds.disable_progress_bar()
    codes = _fake_ucf101(tmp_path / "manual", zipped=zipped)
    split = 2
    config = _data_config(
        source="ucf101", path=str(tmp_path / "manual"), tfds_data_dir=str(tmp_path / "tfds"), ucf101_split=split
    )
    for name, wanted in (("train", 6), ("test", 3)):
        config.split = name
        source = make_source(config, seed=0)  # Builds pyoco_ucf101/split2 on first use.
        source.with_captions = True
        assert len(source) == wanted
        for index in range(len(source)):
            record, element = source.record(index), source[index]
            group = int(record.name.split("_g0")[1][0])
            assert (group == split) == (name == "test")
            assert element["label"] == CLASSES.index(record.name.split("/")[0])  # classInd number - 1.
            assert element["caption"] == ["apply eye makeup", "handstand pushups", "yo yo"][int(element["label"])]
            assert set(frame_codes(element["video"])) == {codes[record.name]} and element["fps"] == 25.0
    builder = tfds.builder("pyoco_ucf101/split2", data_dir=str(tmp_path / "tfds"))
    assert builder.info.features["label"].names == CLASSES
    with make_loader(config, source, _sharding(), seed=0) as loader:
        assert next(loader)["label"].shape == (2,)


def test_ucf101_with_only_the_rar_explains_how_to_extract_it(tmp_path):
    (tmp_path / "UCF101.rar").write_bytes(b"Rar!\x1a\x07\x00")
    with pytest.raises(FileNotFoundError, match=r"UCF101.rar but not the extracted .*unrar x UCF101.rar"):
        prepare_ucf101(str(tmp_path), str(tmp_path / "tfds"))


def test_split_files_are_parsed_strictly():
    assert parse_class_index("2 YoYo\r\n1 ApplyEyeMakeup\r\n\r\n") == ["ApplyEyeMakeup", "YoYo"]
    classes = ["ApplyEyeMakeup", "YoYo"]
    assert parse_split_list("YoYo/v_YoYo_g08_c01.avi 2\r\n", classes) == [("YoYo/v_YoYo_g08_c01.avi", 1)]
    with pytest.raises(ValueError, match="disagrees with classInd"):
        parse_split_list("YoYo/v_YoYo_g08_c01.avi 1", classes)
    with pytest.raises(ValueError, match="not in classInd"):
        parse_split_list("Rowing/v_Rowing_g01_c01.avi", classes)
    assert class_caption("PlayingDaf") == "playing daf" and class_caption("YoYo") == "yo yo"
