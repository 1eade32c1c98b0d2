"""Aspect-ratio and duration buckets: assignment, one shape per batch, size-weighted deterministic schedule,
exact resume, host shares, the bucketed latent cache, refused configs, and a training run over two buckets."""

import collections
import json
import logging
import shutil
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pyoco_jax.configs import default

from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.data import latents
from pyoco_jax.data.buckets import Bucket, BucketSchedule, assign_bucket, parse_buckets
from pyoco_jax.data.clip_sampling import ClipSpec, VideoInfo
from pyoco_jax.data.loader import Loader, bucket_schedule, bucketed_host_dataset, make_loader, make_source
from pyoco_jax.errors import UserError
from tests.data.two_processes import run_two_processes
from tests.data.videos import coded_frames, write_mp4
from tests.train.helpers import FAST, SMALL, TINY

# The folder: label -> (height, width, frames) of the video. Buckets below (B = 4): wide 8 clips (2 batches),
# wide-short 2 (dropped), square 8 (2 batches), tall 1 (dropped); one video too short for all, one corrupt.
WIDE, SHORT, SQUARE, TALL = (48, 96, 10), (48, 96, 5), (48, 48, 10), (96, 48, 10)
VIDEOS = [WIDE] * 8 + [SHORT] * 2 + [SQUARE] * 8 + [TALL] + [(48, 48, 3)]
BUCKETS = ((16, 32, 8), (16, 32, 4), (16, 16, 8), (32, 16, 8))
EXPECTED = {0: set(range(8)), 1: {8, 9}, 2: set(range(10, 18)), 3: {18}}  # Bucket -> labels.
TINY_DIT = TINY.replace("tiny.py", "tiny_dit.py")
TINY_DIT_SMALLER = [  # One block of width 16 at 16x16 x 4 frames, 8 clips a batch (one per fake device).
    "data.num_frames=4",
    "data.resolution=16",
    "data.global_batch_size=8",
    "model.dit.num_layers=1",
    "model.dit.num_attention_heads=2",
    "model.dit.attention_head_dim=8",
    "model.dit.ffn_dim=32",
    "model.dit.freq_dim=16",
    "optim.warmup_steps=2",
    "train.log_every=1",
    "sample.num_steps=2",
    "sample.num_samples=1",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bucketed")
    rows = ["path,label"]
    for label, (height, width, frames) in enumerate(VIDEOS):
        write_mp4(root / f"v{label}.mp4", coded_frames(frames, height, width))
        rows.append(f"v{label}.mp4,{label}")
    (root / "corrupt.mp4").write_bytes(b"not a video" * 100)
    rows.append(f"corrupt.mp4,{len(VIDEOS)}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _video_folder(folder) -> list[str]:
    """The folder as config overrides, unconditional (its labels are row numbers)."""
    return ["data.source=video_folder", f"data.path={folder}", "data.num_classes=0", "model.num_classes=0"]


def _data_config(folder, **changes):
    data = default.get_config().data
    data.update(source="video_folder", path=str(folder), num_frames=8, resolution=16, global_batch_size=4)
    data.update(buckets=BUCKETS, prefetch=0)
    data.update(**changes)
    return data


def _sharding(devices: int = 4) -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()[:devices]), ("data",)), PartitionSpec("data"))


def _take(loader, count: int) -> list[dict[str, np.ndarray]]:
    return [jax.tree.map(np.asarray, next(loader)) for _ in range(count)]


def test_a_video_goes_to_the_nearest_aspect_among_the_buckets_it_fills():
    buckets = parse_buckets(((16, 16, 4), (16, 32, 4), (16, 32, 8), (32, 16, 4)))
    spec = ClipSpec(1, 16, 16)  # Frames and size come from each bucket; the stride from here.

    def bucket(width, height, frames, **kwargs):
        return assign_bucket(buckets, kwargs.pop("spec", spec), VideoInfo(width, height, 24.0, frames), **kwargs)

    assert bucket(64, 32, 100) == 2  # 2:1 and long enough for 8 frames: the longer of the two 2:1 buckets.
    assert bucket(64, 32, 6) == 1  # 2:1, fills only 4 frames.
    assert bucket(50, 40, 100) == 0  # 1.25:1 is nearer 1:1 than 2:1 (in log ratio).
    assert bucket(32, 64, 100) == 3 and bucket(30, 64, 100) == 3  # Portrait.
    assert bucket(64, 32, 3) is None  # Too short for every bucket.
    assert bucket(64, 32, 7, spec=ClipSpec(1, 16, 16, frame_stride=2)) == 1  # 4 frames at stride 2 span 7.
    assert bucket(64, 32, 6, spec=ClipSpec(1, 16, 16, frame_stride=2)) is None
    assert bucket(64, 32, 100, end=0.25) == 1  # Its end, 0.25 s, leaves 6 of the 100 frames.
    assert buckets[2].spec(ClipSpec(1, 8, 8, frame_stride=3)) == ClipSpec(8, 16, 32, frame_stride=3)


def test_each_batch_is_one_buckets_and_each_epoch_sees_every_clip_of_the_kept_buckets_once(folder, caplog):
    with caplog.at_level(logging.INFO):
        source = make_source(_data_config(folder), seed=0)
        loader = make_loader(_data_config(folder), source, _sharding(), seed=0)
    log = caplog.text
    assert "1 videos too short for all of them, 1 unreadable" in log and "corrupt.mp4" in log
    assert "Dropped 2 bucket(s) with fewer clips than a global batch of 4 (3 clips in all)" in log
    labels = {b: {int(source[int(i)]["label"]) for i in m} for b, m in enumerate(source.bucket_members)}
    assert labels == EXPECTED
    with loader:
        batches = _take(loader, 8)  # Two epochs of 2 + 2 batches.
    shapes = {(16, 32, 8): (8, 16, 32, 3), (16, 16, 8): (8, 16, 16, 3)}
    for epoch in (batches[:4], batches[4:]):
        seen = []
        for batch in epoch:
            bucket = next(b for b, members in EXPECTED.items() if int(batch["label"][0]) in members)
            assert set(batch["label"].tolist()) <= EXPECTED[bucket]  # All rows from one bucket ...
            assert batch["video"].shape == (4, *shapes[BUCKETS[bucket]])  # ... at its shape.
            seen += batch["label"].tolist()
        assert sorted(seen) == sorted(EXPECTED[0] | EXPECTED[2])
    assert [b["label"].tolist() for b in batches[:4]] != [b["label"].tolist() for b in batches[4:]]  # Reshuffled.


def test_a_bad_file_falls_back_to_the_next_clip_of_its_bucket(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "videos")
    source = make_source(_data_config(tmp_path / "videos"), seed=0)
    first, last = (int(i) for i in source.bucket_members[0][[0, -1]])
    label = int(source[last]["label"])
    (tmp_path / "videos" / f"v{label}.mp4").unlink()  # Gone after its header was read.
    element = source.read(last, epoch=0)
    assert element["bad_files"] == 1 and element["source_index"] == first  # Wrapped round within the bucket ...
    assert element["video"].shape == (8, 16, 32, 3) and int(element["label"]) in EXPECTED[0]  # ... at its shape.
    assert source.skipped_indices(first, 1) == [last]
    assert f"v{label}.mp4: FileNotFoundError" in source.describe_failure(last)
    with pytest.raises(UserError, match="no video of .* fills any of data.buckets .*20 too short, 1 unreadable"):
        make_source(_data_config(folder, buckets=((16, 16, 64),)), seed=0)


def test_resume_at_step_k_continues_exactly_in_any_worker_count_and_checks_the_buckets(folder):
    config = _data_config(folder, crop="random", flip=True)
    source = make_source(config, seed=5)
    with make_loader(config, source, _sharding(), seed=5) as loader:
        first = _take(loader, 3)
        state = json.loads(json.dumps(loader.get_state()))
        rest = _take(loader, 3)
    assert state["position"] == 12 and state["buckets"] == ["16x32x8: 8", "16x32x4: 2", "16x16x8: 8", "32x16x8: 1"]
    config.update(worker_count=2, prefetch=2)  # Read in worker processes: the same batches.
    with make_loader(config, source, _sharding(), seed=5, state=state) as resumed:
        for got, want in zip(_take(resumed, 3), rest, strict=True):
            assert got.keys() == want.keys()
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert first[0]["label"].tolist() != rest[0]["label"].tolist()
    other = make_source(_data_config(folder, buckets=BUCKETS[::-1]), seed=5)  # The same clips, other bucket ids.
    with pytest.raises(ValueError, match="has buckets="):
        make_loader(config, other, _sharding(), seed=5, state=state)


class BucketIndexSource:
    """Bucketed elements that name their index, at their bucket's shape (the loader's view of a bucketed source)."""

    def __init__(self, sizes, shapes):
        self.buckets = [Bucket(*shape) for shape in shapes]
        offsets = np.cumsum([0, *sizes])
        self.bucket_members = tuple(np.arange(offsets[b], offsets[b + 1]) for b in range(len(sizes)))
        self._bucket = np.repeat(np.arange(len(sizes)), sizes)

    def __len__(self) -> int:
        return len(self._bucket)

    def read(self, index: int, epoch: int) -> dict[str, np.ndarray]:
        bucket = self.buckets[self._bucket[index]]
        video = np.full((bucket.frames, bucket.height, bucket.width, 1), epoch % 256, np.uint8)
        return {"index": np.asarray(index, np.int32), "video": video}


def test_the_schedule_is_a_function_of_seed_and_step_weighted_by_bucket_size():
    members = [np.arange(40), np.arange(40, 60), np.arange(60, 63)]  # 10, 5 and 0 batches of 4.
    schedule = BucketSchedule(members, 4, seed=3)
    batches = [schedule.batch(n) for n in range(45)]  # 3 epochs of 15.
    for epoch in range(3):
        part = batches[15 * epoch : 15 * (epoch + 1)]
        assert collections.Counter(b.bucket for b in part) == {0: 10, 1: 5}  # In proportion to size.
        assert sorted(np.concatenate([b.indices for b in part]).tolist()) == list(range(60))  # Each clip once.
        assert {b.epoch for b in part} == {epoch}
    again = BucketSchedule(members, 4, seed=3)
    assert all(np.array_equal(again.batch(n).indices, batches[n].indices) for n in (44, 0, 17))  # Any order.
    other = [BucketSchedule(members, 4, seed=4).batch(n).bucket for n in range(15)]
    assert other != [b.bucket for b in batches[:15]]
    np.testing.assert_allclose(schedule.shares(), [2 / 3, 1 / 3, 0])
    plain = BucketSchedule(members, 4, seed=3, shuffle=False)
    assert [plain.batch(n).bucket for n in range(6)] == [0, 1, 0, 0, 1, 0]  # Unshuffled: spread evenly.
    np.testing.assert_array_equal(plain.batch(0).indices, [0, 1, 2, 3])
    with pytest.raises(UserError, match="no bucket holds a full global batch of 64"):
        BucketSchedule(members, 64, seed=0)


def test_hosts_take_their_rows_of_one_buckets_batch_and_skipping_ahead_equals_continuing():
    source = BucketIndexSource([12, 8, 20], [(2, 4, 1), (4, 2, 1), (2, 2, 2)])
    schedule = BucketSchedule(source.bucket_members, 4, seed=1)
    whole = bucketed_host_dataset(source, schedule, process_index=0, process_count=1)
    hosts = [bucketed_host_dataset(source, schedule, process_index=p, process_count=2) for p in (0, 1)]
    for n in range(20):  # Two epochs of 10.
        rows = [host[n] for host in hosts]
        assert rows[0]["video"].shape[1:] == rows[1]["video"].shape[1:] == whole[n]["video"].shape[1:]
        np.testing.assert_array_equal(np.concatenate([r["index"] for r in rows]), whole[n]["index"])
        np.testing.assert_array_equal(whole[n]["index"], schedule.batch(n).indices)
        assert (whole[n]["video"] == n // 10).all()  # The epoch reaches the source.
    ahead = bucketed_host_dataset(source, schedule, process_index=1, process_count=2, start_batch=7)
    for n in range(7, 15):
        np.testing.assert_array_equal(ahead[n - 7]["index"], hosts[1][n]["index"])
    with Loader(source, _sharding(2), global_batch_size=4, seed=1) as loader:
        for n in range(3):
            batch = next(loader)
            assert batch["index"].sharding.is_equivalent_to(_sharding(2), 1)
            np.testing.assert_array_equal(np.asarray(batch["index"]), whole[n]["index"])


_WORKER = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    from pyoco_jax.configs import default
    from pyoco_jax.data.loader import make_loader, make_source

    data = default.get_config().data
    buckets = json.loads(sys.argv[4])
    data.update(source="video_folder", path=sys.argv[3], num_frames=8, resolution=16, global_batch_size=4)
    data.update(buckets=tuple(map(tuple, buckets)), prefetch=0)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    try:
        loader = make_loader(data, make_source(data, seed=2), NamedSharding(mesh, PartitionSpec("data")), seed=2)
    except Exception as err:
        print("RESULT " + json.dumps({"error": f"{type(err).__name__}: {err}"}))
        sys.exit()
    batches = []
    for _ in range(5):
        batch = next(loader)
        rows = {s.index[0].start: np.asarray(s.data).tolist() for s in batch["source_index"].addressable_shards}
        batches.append({"shape": list(batch["video"].shape), "rows": rows})
    print("RESULT " + json.dumps({"batches": batches}))
    loader.close()
    """
)


def _two_processes(tmp_path, folder, buckets_of_process) -> list[dict]:
    args = [[str(folder), json.dumps(buckets)] for buckets in buckets_of_process]
    return run_two_processes(tmp_path, _WORKER, args)


def test_two_processes_probe_alike_and_each_loads_its_rows_of_one_buckets_batch(folder, tmp_path):
    results = _two_processes(tmp_path, folder, [BUCKETS, BUCKETS])
    schedule = bucket_schedule(make_source(_data_config(folder), seed=2), 4, seed=2)
    for n in range(5):
        rows = {}
        for result in results:
            batch = result["batches"][n]
            bucket = BUCKETS[schedule.batch(n).bucket]
            assert batch["shape"] == [4, bucket[2], bucket[0], bucket[1], 3]  # Both hosts: the global shape.
            rows.update({int(start): values for start, values in batch["rows"].items()})
        assert sorted(rows) == [0, 1, 2, 3]  # Each process holds its device's row of each of its two rows.
        assert [rows[i][0] for i in range(4)] == schedule.batch(n).indices.tolist()
    mixed = _two_processes(tmp_path, folder, [BUCKETS, BUCKETS[::-1]])
    assert all(r["error"].startswith("UserError: the processes assigned the videos to data.buckets") for r in mixed)


def test_a_bucketed_latent_cache_is_grouped_by_its_index(tmp_path):
    shapes = {0: (4, 6, 2), 1: (6, 4, 3)}  # Cache bucket -> (height, width, frames) of its latents.
    order = [[0, 1, 0, 0], [1, 1, 0, 1, 0]]  # Bucket of each record, per shard.
    shards = []
    for number, buckets in enumerate(order):
        records = []
        for k, bucket in enumerate(buckets):
            h, w, f = shapes[bucket]
            mean = np.full((f, h, w, 4), 10 * number + k, np.float16)
            records.append({"mean": mean, "std": np.zeros_like(mean), "label": np.int32(k), "fps": np.float32(8)})
        name = latents.shard_name(number, 2)
        latents.write_shard(tmp_path / name, records)
        shards.append({"file": name, "num_records": len(records), "record_buckets": buckets})
    latents.write_index(
        tmp_path, {"shards": shards, "num_examples": 9, "scaling_factor": 1.0, "buckets": [shapes[0], shapes[1]]}
    )
    config = default.get_config().data
    config.update(source="latents", path=str(tmp_path), buckets=(shapes[1], shapes[0]), sample_posterior=False)
    config.update(global_batch_size=2, prefetch=0)
    source = make_source(config, seed=0)
    assert [m.tolist() for m in source.bucket_members] == [[1, 4, 5, 7], [0, 2, 3, 6, 8]]
    with make_loader(config, source, _sharding(2), seed=0) as loader:
        for _ in range(8):
            video = np.asarray(next(loader)["video"])
            h, w, f = shapes[0] if video.shape[1] == shapes[0][2] else shapes[1]
            assert video.shape == (2, f, h, w, 4)
    config.buckets = (shapes[0],)
    with pytest.raises(UserError, match=r"config key 'data.buckets'.*set data.buckets=\(\(4, 6, 2\), \(6, 4, 3\)\)"):
        make_source(config, seed=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.buckets=((16,21,4),)"], "bucket 16x21x4 .*divisible by the U-Net's downsampling factor 2"),
        (["data.buckets=((16,16,8),)"], "more frames than data.num_frames=4"),
        (["data.buckets=((16,16),)"], r"each bucket is \(height, width, frames\)"),
        (["data.buckets=((16,16,4),(16,16,4))"], "16x16x4 is listed twice"),
        (["data.source=synthetic"], "buckets apply to data.source 'video_folder' or 'latents'"),
        (["mesh.sequence=2", "data.buckets=((16,16,3),)"], "3 frames cannot be split over mesh.sequence"),
        (["model.dit.patch_size=(1,4,4)", "data.buckets=((16,18,4),)"], "16x18x4 .*18 is not divisible by model.dit"),
        (["train.eval_every=5"], "in-loop eval needs clips of one shape"),
    ],
)
def test_bad_buckets_are_refused_in_one_line(folder, overrides, message):
    dit = any(item.startswith("model.dit") for item in overrides)
    base = TINY_DIT_SMALLER if dit else [*FAST, *SMALL]
    config = [*base, *_video_folder(folder), "data.buckets=((16,16,4),)", *overrides]
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(TINY_DIT if dit else TINY, config)
    assert "\n" not in str(caught.value)


def test_training_runs_over_two_bucket_shapes(folder, tmp_path):
    """The DiT (Wan's backbone) in miniature: one compile per bucket shape, about 10 s each here."""
    from pyoco_jax.train.trainer import train

    config = load_config(
        TINY_DIT,
        [
            *TINY_DIT_SMALLER,
            *_video_folder(folder),
            "data.buckets=((16,32,4),(16,16,4))",  # Wide and square: 10 and 9 videos of 4+ frames.
            "data.prefetch=0",
            "train.num_steps=3",
            "train.checkpoint_every=100",
        ],
    )
    schedule = BucketSchedule([np.arange(10), np.arange(10, 19)], 8, seed=config.seed)
    assert {schedule.batch(n).bucket for n in range(3)} == {0, 1}  # The run below meets both shapes.
    metrics = train(config, str(tmp_path))
    assert np.isfinite(metrics["loss"])
