"""Video folders: metadata rows -> elements (labels, captions, windows), per-epoch clips, host shards."""

import json

import numpy as np
import pytest
from pyoco_jax.configs import default

from pyoco_jax.data.clip_sampling import ClipSpec
from pyoco_jax.data.loader import host_dataset, make_source
from pyoco_jax.data.metadata import MetadataError, read_metadata
from pyoco_jax.data.video_folder import VideoFolderSource
from tests.data.videos import coded_frames, frame_codes, write_avi, write_mp4, write_webm

# (file, writer, first code, caption, label, start, end): each 16-frame 24 fps video's codes start at
# `first`, so every decoded frame tells which file and which frame it came from.
ROWS = [
    ("a.mp4", write_mp4, 0, 'a red, "quoted" caption', 2, None, None),
    ("sub/b.webm", write_webm, 10, "second", 0, 0.25, None),
    ("c.avi", write_avi, 20, "", 1, None, 0.5),
]
# A centred 4-frame stride-2 clip spans 7 frames. a: starts 0..9 -> 4. b: from 0.25 s = frame 6, starts
# 6..9 -> 7. c: up to 0.5 s = frame 11, starts 0..5 -> 2.
CENTRED = [[4, 6, 8, 10], [7, 9, 11, 13], [2, 4, 6, 8]]


def _write_folder(folder, metadata_format="csv"):
    (folder / "sub").mkdir(parents=True)
    for name, write, first, *_ in ROWS:
        write(folder / name, coded_frames(36)[first : first + 16], 24)
    if metadata_format == "csv":
        lines = ["path,caption,label,start,end,extra"]
        for name, _, _, caption, label, start, end in ROWS:
            quoted = '"' + caption.replace('"', '""') + '"'
            lines.append(f"{name},{quoted},{label},{'' if start is None else start},{'' if end is None else end},x")
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    else:
        records = [
            {"path": name, "caption": caption, "label": label, **({"start": start} if start else {}), "end": end}
            for name, _, _, caption, label, start, end in ROWS
        ]
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    return folder


@pytest.mark.parametrize("metadata_format", ["csv", "jsonl"])
def test_elements_line_up_with_the_metadata_rows(tmp_path, metadata_format):
    folder = _write_folder(tmp_path / "videos", metadata_format)
    spec = ClipSpec(4, 32, 32, frame_stride=2, temporal="center")
    source = VideoFolderSource(str(folder), spec, num_classes=3, with_captions=True)
    assert len(source) == 3
    for index, (name, _, first, caption, label, _, _) in enumerate(ROWS):
        element = source[index]
        assert element["label"] == label and element["label"].dtype == np.int32
        assert element["caption"] == caption == source.caption(index)
        assert element["fps"] == 12.0 and element["bad_files"] == 0 and element["source_index"] == index
        assert element["video"].shape == (4, 32, 32, 3) and element["video"].dtype == np.uint8
        assert (frame_codes(element["video"]) - first).tolist() == CENTRED[index], name
    assert "caption" not in VideoFolderSource(str(folder), spec)[0]


def test_random_clips_vary_by_epoch_and_seed_but_not_by_call(tmp_path):
    folder = _write_folder(tmp_path / "videos")
    spec = ClipSpec(2, 16, 16, crop="random", flip=True)
    source = VideoFolderSource(str(folder), spec, seed=3)
    starts = {int(frame_codes(source.read(0, epoch)["video"])[0]) for epoch in range(12)}
    assert len(starts) > 4  # 15 possible starts.
    np.testing.assert_array_equal(source.read(0, 5)["video"], source.read(0, 5)["video"])
    other = VideoFolderSource(str(folder), spec, seed=4)
    assert any(not np.array_equal(source.read(0, e)["video"], other.read(0, e)["video"]) for e in range(3))


def test_hosts_read_disjoint_examples(tmp_path):
    folder = _write_folder(tmp_path / "videos")
    source = VideoFolderSource(str(folder), ClipSpec(2, 16, 16))
    common = dict(global_batch_size=2, seed=1)
    rows = [host_dataset(source, process_index=p, process_count=2, **common)[0] for p in (0, 1)]
    whole = host_dataset(source, process_index=0, process_count=1, **common)[0]
    assert [int(r["source_index"][0]) for r in rows] == whole["source_index"].tolist()
    assert rows[0]["source_index"][0] != rows[1]["source_index"][0]
    np.testing.assert_array_equal(np.concatenate([r["video"] for r in rows]), whole["video"])


def test_make_source_builds_a_folder_source_from_the_config(tmp_path):
    folder = _write_folder(tmp_path / "videos", "jsonl")
    config = default.get_config().data
    config.update(source="video_folder", path=str(folder), num_frames=3, resolution=16, num_classes=3, target_fps=8.0)
    source = make_source(config, seed=0)
    assert isinstance(source, VideoFolderSource) and len(source) == 3 and source[0]["fps"] == 8.0
    config.num_classes = 2
    with pytest.raises(ValueError, match="label 2, outside 0..1"):
        make_source(config, seed=0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,caption\na.mp4,x\n", "header with a 'path' column"),
        ("path,label\na.mp4,cat\n", "not an integer"),
        ("path,label\na.mp4,1\nb.mp4,\n", "no label while others do"),
        ("path,start,end\na.mp4,2,1\n", "end 1.0 must be after start 2.0"),
        ("path,start\na.mp4,-1\n", "start must be"),
        ("path\n", "no rows"),
    ],
)
def test_metadata_mistakes_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "metadata.csv"
    path.write_text(text)
    with pytest.raises(MetadataError, match=message) as caught:
        read_metadata(str(path))
    assert str(path) in str(caught.value)


def test_split_column_selects_rows(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_mp4(folder / "a.mp4", coded_frames(8), 24)
    (folder / "metadata.jsonl").write_text(
        '{"path": "a.mp4", "split": "train"}\n{"path": "a.mp4", "split": "test", "start": 0.1}\n'
    )
    test_rows = VideoFolderSource(str(folder), ClipSpec(2, 8, 8), split="test").rows
    assert [row.start for row in test_rows] == [0.1]
    with pytest.raises(MetadataError, match=r"no rows with split 'val'; its splits are \['test', 'train'\]"):
        VideoFolderSource(str(folder), ClipSpec(2, 8, 8), split="val")
