"""Run outputs reach the workdir through etils.epath: metrics.jsonl, TensorBoard events and sample videos.

Local workdirs take the same staging-and-copy route as gs:// ones, so the local tests exercise it; a gs://
workdir is then tested for real against fsspec's in-memory filesystem (see workdir_outputs.py). Event
files are read back with a TFRecord parser written here (lengths and masked CRC-32C checked) and
tensorboardX's own Event protobuf.
"""

import json
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from pyoco_jax.data.video_io import read_video, video_grid
from pyoco_jax.train.metrics import MetricLogger
from tests.launch.workdir_outputs import FPS, videos, write_outputs

_CRC32C_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ (0x82F63B78 if _crc & 1 else 0)
    _CRC32C_TABLE.append(_crc)


def masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path: pathlib.Path) -> list[event_pb2.Event]:
    data, position, events = path.read_bytes(), 0, []
    while position < len(data):
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[position + 8 : position + 12])[0] == masked_crc32c(header)
        record = data[position + 12 : position + 12 + length]
        assert struct.unpack("<I", data[position + 12 + length : position + 16 + length])[0] == masked_crc32c(record)
        events.append(event_pb2.Event.FromString(record))
        position += 16 + length
    assert position == len(data)  # No truncated record at the end.
    return events


def summaries(root: pathlib.Path) -> tuple[dict[int, float], dict[int, tuple[int, int]]]:
    """Every event file under root/tensorboard: {step: loss}, {step: (image height, width)}."""
    losses, images = {}, {}
    for path in sorted((root / "tensorboard").iterdir()):
        for event in read_events(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    losses[event.step] = value.simple_value
                elif value.tag == "samples":
                    images[event.step] = (value.image.height, value.image.width)
    return losses, images


def check_outputs(root: pathlib.Path, start_step: int = 0) -> None:
    """What `write_outputs(workdir, start_step)` must leave in the workdir, read back independently."""
    steps = [start_step + 1, start_step + 2]
    lines = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert lines[-2:] == [{"step": steps[0], "loss": 0.5}, {"step": steps[1], "loss": 0.25}]
    losses, images = summaries(root)
    assert {step: losses[step] for step in steps} == {steps[0]: 0.5, steps[1]: 0.25}
    assert images[steps[1]] == (2 * 16, 4 * 16)  # A row of 4 frames per sample, 2 samples.
    frames, fps = read_video(root / "samples" / f"step_{steps[1]:07d}.mp4")
    grid, swapped = video_grid(videos(), cols=2), video_grid(videos()[::-1], cols=2)
    assert fps == FPS and frames.shape == (4, 16, 34, 3)  # Two 16x16 clips, a 1-pixel gap, padded to even width.
    error = np.abs(frames[:, :, :33].astype(int) - grid).mean()
    assert error < 5 and np.abs(frames[:, :, :33].astype(int) - swapped).mean() > 5 * error  # Lossy, but this video.
    assert (root / "samples" / f"step_{steps[1]:07d}.gif").stat().st_size > 0


def test_local_workdir_gets_every_output_and_resumed_runs_append(tmp_path):
    workdir = tmp_path / "run"  # Does not exist yet: the writers make it.
    write_outputs(str(workdir))
    check_outputs(workdir)
    write_outputs(str(workdir), start_step=2)  # A resumed run: appends to metrics.jsonl, adds an event file.
    check_outputs(workdir, start_step=2)
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 4
    assert len(list((workdir / "tensorboard").iterdir())) == 2
    assert sorted(summaries(workdir)[0]) == [1, 2, 3, 4]


def test_staged_metrics_reach_the_workdir_during_the_run_at_most_every_sync_seconds(tmp_path):
    """The remote-workdir route (a staging directory mirrored into the workdir), here onto a local path."""
    logger = MetricLogger(str(tmp_path), start_step=0, num_steps=3, enabled=True, sync_seconds=3600, staged=True)
    logger.scalars(1, {"loss": 1.0})  # The first write is copied at once.
    logger.scalars(2, {"loss": 2.0})  # Within sync_seconds of it: stays in the staging directory.
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
    staging = logger._mirror.local
    logger.close()  # Copies everything and removes the staging directory.
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(summaries(tmp_path)[0]) == [1, 2] and not staging.exists()


@pytest.mark.slow
def test_gs_workdir_through_an_in_memory_object_store(tmp_path):
    out, cwd = tmp_path / "bucket_run", tmp_path / "cwd"
    cwd.mkdir()
    script = pathlib.Path(__file__).with_name("workdir_outputs.py")
    result = subprocess.run([sys.executable, str(script), str(out)], cwd=cwd, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(out)
    assert list(cwd.iterdir()) == []  # Nothing was written to a local "gs:" folder by mistake.
