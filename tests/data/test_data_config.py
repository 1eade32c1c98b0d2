"""The real-video data keys fail at config load, naming the key (and the path), before anything is built."""

import pathlib

import pytest

from pyoco_jax.config import ConfigError, load_config

TINY = str(pathlib.Path(__file__).parents[2] / "configs" / "tiny.py")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.crop=middle"], r"'data.crop': 'middle' is not one of \('random', 'center'\)"),
        (["data.temporal_sampling=first"], "'data.temporal_sampling'"),
        (["data.frame_stride=-2"], "'data.frame_stride': must be > 0"),
        (["data.target_fps=-1.0"], "'data.target_fps': must be >= 0"),
        (["data.max_failure_fraction=1.5"], "'data.max_failure_fraction': must be in"),
        (["data.ucf101_split=4"], "'data.ucf101_split'"),
        (["data.source=webdataset"], "'data.source'"),
        (["data.source=tfds"], "'data.tfds_name': name the TFDS dataset"),
        (["data.source=video_folder"], "'data.path': set it to the video folder"),
        (["data.source=video_folder", "data.path=/no/such/folder"], "'data.path': the video_folder folder /no/"),
        (["data.source=ucf101", "data.channels=4", "model.in_channels=4", "model.out_channels=4"], "'data.channels'"),
    ],
)
def test_bad_data_values_fail_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, overrides)


def test_a_video_folder_needs_its_metadata_file(tmp_path):
    folder = ["data.source=video_folder", f"data.path={tmp_path}", "data.num_classes=0", "model.num_classes=0"]
    with pytest.raises(ConfigError, match=f"'data.metadata': no metadata file in {tmp_path}"):
        load_config(TINY, folder)
    with pytest.raises(ConfigError, match=f"'data.metadata': metadata file {tmp_path}/clips.jsonl does not exist"):
        load_config(TINY, [*folder, "data.metadata=clips.jsonl"])
    (tmp_path / "clips.jsonl").write_text('{"path": "a.mp4"}\n')
    config = load_config(TINY, [*folder, "data.metadata=clips.jsonl", "data.frame_stride=2", "data.crop=random"])
    assert config.data.frame_stride == 2 and config.data.crop == "random"


def test_labels_asked_of_a_folder_without_them_fail_at_load(tmp_path):
    (tmp_path / "metadata.csv").write_text("path,caption\na.mp4,a clip\n")
    with pytest.raises(ConfigError, match="'data.num_classes': 4 classes, but .* has no 'label' column"):
        load_config(TINY, ["data.source=video_folder", f"data.path={tmp_path}"])
