"""The input pipeline every source goes through: grain on the host, global jax.Arrays out.

One infinite global stream per run: epoch e is permutation (seed + e) of the
source (grain's index shuffle), epochs back to back. Global batch n is stream
elements [n*B, (n+1)*B); process p of P reads rows [p*B/P, (p+1)*B/P) of it. So
every element is a pure function of its stream position, which gives three
things without any grain iterator state:

* resume is exact: the loader's state is the stream position after the last
  batch handed out, however many later batches prefetch has already built;
* the worker count never changes the data (grain workers read disjoint slices
  of the same indexed dataset and are interleaved back in order);
* a checkpoint resumes on a different number of hosts, and the global batch
  (its rows, in order) does not depend on the host count.

Sources with a `read(index, epoch)` method get the epoch too, so random clips
and crops change every epoch yet stay a function of the stream position.

A bucketed source (clips of several shapes, `data.buckets`; it lists each bucket's
indices in `bucket_members`) follows a `BucketSchedule` instead: global batch n
is all one bucket's, a pure function of (seed, n), so the same three hold.

Every numeric field of an element reaches the devices (so the batch has the
structure of `source[0]`); strings such as captions are dropped. The bad-file
bookkeeping of the video sources (int32 `bad_files`, `source_index`) goes to the
devices too (summing `bad_files` there counts all hosts) and also feeds this
host's counters (`bad_files_total`, `reads_total`), which stop the run with an
error naming files once more than `max_failure_fraction` of its reads failed.
"""

import hashlib
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import grain
import jax
import ml_collections
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from pyoco_jax.data.buckets import BucketSchedule, parse_buckets
from pyoco_jax.data.synthetic import SyntheticVideoSource
from pyoco_jax.data.video_sources import VIDEO_SOURCES
from pyoco_jax.errors import UserError

SOURCES = ("synthetic", *VIDEO_SOURCES, "latents")
_STATE_VERSION = 1
_READ_THREADS = 2  # Threads per process building host batches ahead (grain ReadOptions).
COUNTED_FIELDS = ("bad_files", "source_index")  # Per-example bookkeeping the loader also reads on the host.
FAILURE_MIN_READS = 100  # Reads before the failure fraction is judged, so one early bad file is no verdict.


class DataFailureError(UserError):
    """Too many files failed to load; the message names some of them and why."""


class RandomAccessSource(Protocol):
    """What the loader reads: grain's `RandomAccessDataSource` yielding dicts of arrays."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, np.ndarray]: ...


def make_source(data_config: ml_collections.ConfigDict, *, seed: int = 0) -> RandomAccessSource:
    """Builds the source named by `data.source`; `seed` fixes the synthetic clips and the real clips' augmentation."""
    name = data_config.source
    if name == "synthetic":
        if data_config.channels != 3:
            raise ValueError(
                f"data.source='synthetic' renders RGB clips, so data.channels must be 3 (got {data_config.channels})"
            )
        return SyntheticVideoSource(
            data_config.num_examples,
            data_config.num_frames,
            data_config.resolution,
            num_classes=data_config.num_classes,
            fps=data_config.fps,
            max_objects=data_config.max_objects,
            shape_size=tuple(data_config.shape_size),
            background=data_config.background,
            camera_speed=data_config.camera_speed,
            occluder=data_config.occluder,
            seed=seed,
        )
    buckets = parse_buckets(data_config.buckets)
    if name in VIDEO_SOURCES:
        from pyoco_jax.data.video_sources import make_video_source

        source = make_video_source(data_config, seed=seed, process_count=jax.process_count())
        if buckets:
            from pyoco_jax.data.bucketed_source import BucketedVideoSource

            return BucketedVideoSource(source, buckets)
        return source
    if name == "latents":
        from pyoco_jax.data.latents import LatentShardSource

        if not data_config.path:
            raise ValueError("data.source='latents' needs data.path: the latent cache folder written by pyoco-prepare")
        return LatentShardSource(
            data_config.path,
            sample_posterior=data_config.sample_posterior,
            seed=seed,
            fps=data_config.fps,
            buckets=buckets,
        )
    raise ValueError(f"unknown data.source {name!r}; choose one of {SOURCES}")


def host_dataset(
    source: RandomAccessSource,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    seed: int,
    shuffle: bool = True,
    start: int = 0,
) -> grain.MapDataset:
    """This host's batches (dicts of numpy arrays with B/P rows) of the stream from position `start` on."""
    _check_host_share(global_batch_size, process_index, process_count)
    if len(source) < 1:
        raise ValueError(f"the data source {source!r} is empty")
    if start < 0:
        raise ValueError(f"stream position must be >= 0, got {start}")
    stream = grain.MapDataset.range(len(source))
    if shuffle:
        stream = stream.shuffle(seed=seed % 2**32)
    stream = stream.repeat().map_with_index(_ReadAt(source))[start:]  # repeat() reshuffles each epoch (seed + epoch).
    local_batches = stream.batch(global_batch_size // process_count, drop_remainder=True)
    return local_batches[process_index::process_count]


def bucketed_host_dataset(
    source: RandomAccessSource,
    schedule: BucketSchedule,
    *,
    process_index: int,
    process_count: int,
    start_batch: int = 0,
) -> grain.MapDataset:
    """This host's rows of global batches `start_batch`, `start_batch + 1`, ... of `schedule` (each one bucket's)."""
    _check_host_share(schedule.global_batch_size, process_index, process_count)
    if start_batch < 0:
        raise ValueError(f"global batch index must be >= 0, got {start_batch}")
    rows = schedule.global_batch_size // process_count
    stream = grain.MapDataset.range(rows).repeat()  # Only the position matters: element m is row m % rows of ...
    elements = stream.map_with_index(_ScheduledRow(source, schedule, process_index, rows))  # ... batch m // rows.
    return elements[start_batch * rows :].batch(rows, drop_remainder=True)


def _check_host_share(global_batch_size: int, process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in 0..{process_count - 1}")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"data.global_batch_size={global_batch_size} must be a positive multiple of the process count "
            f"{process_count}: each process loads an equal share"
        )


class _ScheduledRow:
    """Reads this host's element `position`: row `position % rows` of its share of global batch `position // rows`."""

    def __init__(self, source: RandomAccessSource, schedule: BucketSchedule, process_index: int, rows: int):
        self._source, self._schedule = source, schedule
        self._first_row, self._rows = process_index * rows, rows

    def __call__(self, position: int, _: int) -> Mapping[str, np.ndarray]:
        batch, row = divmod(position, self._rows)
        scheduled = self._schedule.batch(batch)
        return self._source.read(int(scheduled.indices[self._first_row + row]), epoch=scheduled.epoch)


class _ReadAt:
    """Element `index` at stream `position`: epoch-aware sources get the epoch (position // len)."""

    def __init__(self, source: RandomAccessSource):
        self._source = source
        self._size = len(source)
        self._epoch_aware = callable(getattr(source, "read", None))

    def __call__(self, position: int, index: int) -> Mapping[str, np.ndarray]:
        if self._epoch_aware:
            return self._source.read(index, epoch=position // self._size)
        return self._source[index]


class Loader(Iterator[dict[str, jax.Array]]):
    """Global batches as dicts of `jax.Array`s on `sharding`, prefetched by a background thread.

    `get_state()` after consuming batch n, given to a new loader (or `set_state`),
    makes batch n + 1 the next one. `last_wait_seconds` / `total_wait_seconds`
    measure how long the caller blocked on data. `bad_files_total` / `reads_total`
    count, over the batches handed out so far, this host's skipped bad files and
    load attempts (examples + bad files); `last_bad_files` is the last batch's share.
    """

    def __init__(
        self,
        source: RandomAccessSource,
        sharding: Sharding,
        *,
        global_batch_size: int,
        seed: int,
        shuffle: bool = True,
        worker_count: int = 0,
        prefetch: int = 2,
        state: Mapping[str, Any] | None = None,
        max_failure_fraction: float = 1.0,
        failure_min_reads: int = FAILURE_MIN_READS,
    ):
        if worker_count < 0 or prefetch < 0:
            raise ValueError(f"data.worker_count ({worker_count}) and data.prefetch ({prefetch}) must be >= 0")
        self._source = source
        self._sharding = sharding
        self._global_batch_size = global_batch_size
        self._seed = seed
        self._shuffle = shuffle
        self._worker_count = worker_count
        self._prefetch = prefetch
        self._process_index = jax.process_index()
        self._process_count = jax.process_count()
        self._field_shardings: dict[int, Sharding] = {}
        self._check_batch_sharding()
        self._schedule = bucket_schedule(source, global_batch_size, seed=seed, shuffle=shuffle)
        if self._schedule is not None and self._process_count > 1:
            _check_processes_agree(self._schedule)
        self._position = 0
        self._iterator: grain.DatasetIterator | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None
        self.last_wait_seconds = 0.0
        self.total_wait_seconds = 0.0
        self._max_failure_fraction = max_failure_fraction
        self._failure_min_reads = failure_min_reads
        self.bad_files_total = 0
        self.reads_total = 0
        self.last_bad_files = 0
        self._failed_indices: dict[int, None] = {}  # Insertion-ordered set of some failed source indices.
        if state is not None:
            self._position = self._checked_position(state)
        self._start()

    def __next__(self) -> dict[str, jax.Array]:
        if self._error is not None:
            raise RuntimeError("the data loader failed earlier; see the error above") from self._error
        if self._iterator is None:
            raise RuntimeError("the data loader is closed")
        begin = time.perf_counter()
        if self._queue is None:
            batch, counted = self._to_global(next(self._iterator))
        else:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._error = item
                if isinstance(item, UserError):  # Bad files the user must fix: their message says how.
                    raise item
                raise RuntimeError("loading a data batch failed") from item
            batch, counted = item
        self.last_wait_seconds = time.perf_counter() - begin
        self.total_wait_seconds += self.last_wait_seconds
        self._position += self._global_batch_size
        self._count_failures(counted)
        return batch

    def _count_failures(self, counted: Mapping[str, np.ndarray]) -> None:
        """Adds this batch's bad files to the counters; too many in total stops the run."""
        rows = self._global_batch_size // self._process_count
        bad = counted.get("bad_files")
        self.last_bad_files = 0 if bad is None else int(bad.sum())
        self.bad_files_total += self.last_bad_files
        self.reads_total += rows + self.last_bad_files
        if self.last_bad_files and "source_index" in counted and len(self._failed_indices) < 8:
            size = len(self._source)
            skipped_indices = getattr(self._source, "skipped_indices", None)  # Bucketed: within the bucket.
            for read, skipped in zip(counted["source_index"].tolist(), bad.tolist(), strict=True):
                if skipped_indices is None:
                    failed = [(read - k) % size for k in range(skipped, 0, -1)]
                else:
                    failed = skipped_indices(read, skipped)
                self._failed_indices.update(dict.fromkeys(failed))
        if self.reads_total < self._failure_min_reads:
            return
        if self.bad_files_total > self._max_failure_fraction * self.reads_total:
            self._error = DataFailureError(self._failure_message())
            raise self._error

    def _failure_message(self) -> str:
        describe = getattr(self._source, "describe_failure", None)
        examples = [describe(i) if describe else f"example {i}" for i in list(self._failed_indices)[:5]]
        return (
            f"{self.bad_files_total} of {self.reads_total} video reads on this host failed "
            f"({self.bad_files_total / self.reads_total:.1%}), more than data.max_failure_fraction="
            f"{self._max_failure_fraction}. Failing files include: {'; '.join(examples)}. Fix or remove them from "
            "the dataset, or raise data.max_failure_fraction"
        )

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position of the next batch (for the checkpoint)."""
        state = {
            "version": _STATE_VERSION,
            "position": self._position,
            "seed": self._seed,
            "shuffle": self._shuffle,
            "num_examples": len(self._source),
        }
        if self._schedule is not None:  # The same clips in other buckets would be another stream.
            schedule = self._schedule
            state["buckets"] = [f"{name}: {len(m)}" for name, m in zip(schedule.names, schedule.members, strict=True)]
        return state

    def examples_by_share(self) -> list[tuple[float, Mapping[str, np.ndarray]]]:
        """(fraction of batches, one example) per shape the batches have: one, or each kept bucket's."""
        if self._schedule is None:
            return [(1.0, self._source[0])]
        shares, members = self._schedule.shares(), self._schedule.members
        return [(share, self._source[int(m[0])]) for share, m in zip(shares, members, strict=True) if share]

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from `state`, dropping whatever was prefetched."""
        position = self._checked_position(state)
        self._halt()
        self._error = None
        self._position = position
        self._start()

    def close(self) -> None:
        """Stops the prefetch thread and grain workers."""
        self._halt()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checked_position(self, state: Mapping[str, Any]) -> int:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"data iterator state {dict(state)} is not a version-{_STATE_VERSION} loader state")
        ours = self.get_state()
        for key in ("seed", "shuffle", "num_examples", "buckets"):
            if state.get(key) != ours.get(key):
                raise ValueError(
                    f"the checkpointed data iterator has {key}={state.get(key)!r} but this run has {ours.get(key)!r}; "
                    "resuming would not continue the same data stream (restore with the original seed and data)"
                )
        return int(state["position"])

    def _check_batch_sharding(self) -> None:
        batch_sharding = self._field_sharding(1)
        try:
            batch_sharding.shard_shape((self._global_batch_size,))
        except ValueError as err:
            raise ValueError(
                f"data.global_batch_size={self._global_batch_size} cannot be split over the batch axis of "
                f"{self._sharding}; make it a multiple of the number of data-parallel shards"
            ) from err

    def _field_sharding(self, ndim: int) -> Sharding:
        """The layout for a field of rank `ndim`: the batch-sharding spec cut to that rank."""
        if ndim not in self._field_shardings:
            sharding = self._sharding
            if isinstance(sharding, NamedSharding):
                sharding = NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[:ndim]))
            self._field_shardings[ndim] = sharding
        return self._field_shardings[ndim]

    def _to_global(self, host_batch: Mapping[str, np.ndarray]) -> tuple[dict[str, jax.Array], dict[str, np.ndarray]]:
        """(device batch of the numeric fields, host copies of the counted ones); strings are dropped."""
        arrays, counted = {}, {}
        for name, local in host_batch.items():
            if np.asarray(local).dtype.kind not in "biuf":
                continue
            if name in COUNTED_FIELDS:
                counted[name] = np.array(local)
            # grain workers hand over shared-memory arrays; copy them into plain ones so the segment is released
            # now, not whenever JAX drops its zero-copy view of it.
            local = local if type(local) is np.ndarray else np.array(local)
            global_shape = (self._global_batch_size, *local.shape[1:])
            arrays[name] = jax.make_array_from_process_local_data(self._field_sharding(local.ndim), local, global_shape)
        return arrays, counted

    def _start(self) -> None:
        if self._schedule is not None:
            batches = bucketed_host_dataset(
                self._source,
                self._schedule,
                process_index=self._process_index,
                process_count=self._process_count,
                start_batch=self._position // self._global_batch_size,
            )
        else:
            batches = host_dataset(
                self._source,
                global_batch_size=self._global_batch_size,
                process_index=self._process_index,
                process_count=self._process_count,
                seed=self._seed,
                shuffle=self._shuffle,
                start=self._position,
            )
        read = grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=max(_READ_THREADS, self._prefetch))
        dataset = batches.to_iter_dataset(read)
        if self._worker_count:
            # grain reads absl flags in its workers; outside absl.app they are unparsed and would raise.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            options = grain.MultiprocessingOptions(
                num_workers=self._worker_count, per_worker_buffer_size=max(1, self._prefetch)
            )
            dataset = dataset.mp_prefetch(options)
        self._iterator = iter(dataset)
        if self._prefetch:
            self._stop = threading.Event()
            self._queue = queue.Queue(maxsize=self._prefetch)
            self._thread = threading.Thread(
                target=self._produce, args=(self._iterator, self._queue, self._stop), name="pyoco-data", daemon=True
            )
            self._thread.start()

    def _produce(self, iterator: Iterator[Mapping[str, np.ndarray]], out: queue.Queue, stop: threading.Event) -> None:
        """Keeps `out` full of device batches until stopped; an error is passed on as the last item."""

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            while not stop.is_set() and put(self._to_global(next(iterator))):
                pass
        except BaseException as err:  # noqa: B036 -- handed to the consumer, which re-raises it
            put(err)

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._queue = None
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None


def bucket_schedule(
    source: RandomAccessSource, global_batch_size: int, *, seed: int, shuffle: bool = True
) -> BucketSchedule | None:
    """The schedule of a bucketed source (one with `bucket_members` and `buckets`), else None."""
    members = getattr(source, "bucket_members", None)
    if members is None:
        return None
    names = [str(bucket) for bucket in source.buckets]
    return BucketSchedule(members, global_batch_size, seed=seed, shuffle=shuffle, names=names)


def _check_processes_agree(schedule: BucketSchedule) -> None:
    """Every process must draw the same batches: one that read some video's header differently would not."""
    digest = hashlib.sha256(repr(schedule.names).encode())
    for members in schedule.members:
        digest.update(np.int64(len(members)).tobytes() + members.tobytes())
    ours = np.frombuffer(digest.digest(), np.uint8)
    if (np.asarray(multihost_utils.process_allgather(ours)) != ours).any():
        raise UserError(
            "the processes assigned the videos to data.buckets differently (a video's header read differently, "
            "or another file list); make data.path hold the same readable files for every host"
        )


def make_loader(
    data_config: ml_collections.ConfigDict,
    source: RandomAccessSource,
    sharding: Sharding,
    *,
    seed: int,
    state: Mapping[str, Any] | None = None,
) -> Loader:
    """The training loader for `data_config` (batch size, shuffle, workers, prefetch), from `state` if given."""
    return Loader(
        source,
        sharding,
        global_batch_size=data_config.global_batch_size,
        seed=seed,
        shuffle=data_config.shuffle,
        worker_count=data_config.worker_count,
        prefetch=data_config.prefetch,
        state=state,
        max_failure_fraction=data_config.max_failure_fraction,
    )
