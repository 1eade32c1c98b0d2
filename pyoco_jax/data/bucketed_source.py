"""A video folder's clips grouped into `data.buckets`, each video cut to its bucket's shape (see buckets.py).

Every video's header is probed once (size, frame rate, length; no decoding) to assign its bucket; every
host probes all of them and so computes the same assignment. Unreadable videos and videos too short for
every bucket are left out and counted in the log.
"""

import concurrent.futures
from collections.abc import Sequence

import numpy as np
from absl import logging

from pyoco_jax.data.buckets import Bucket, assign_bucket
from pyoco_jax.data.decode import probe_video
from pyoco_jax.data.video_source import MAX_CONSECUTIVE_FAILURES, VideoClipSource
from pyoco_jax.errors import UserError

PROBE_THREADS = 16  # Header reads in flight: opening a file is mostly waiting on storage.


class BucketedVideoSource:
    """Clips of `source`'s videos at their buckets' shapes; index i is clip i of the buckets laid end to end.

    `bucket_members[b]` are the indices of bucket b's clips. A bad file falls back to the next clip of the
    same bucket (so a batch keeps its shape); elements are those of `source`, with `source_index` in this
    source's indices.
    """

    def __init__(self, source: VideoClipSource, buckets: Sequence[Bucket]):
        self._source = source
        self.buckets = tuple(buckets)
        self._specs = [bucket.spec(source.spec) for bucket in self.buckets]
        with concurrent.futures.ThreadPoolExecutor(PROBE_THREADS) as pool:
            assigned = list(pool.map(self._assign, range(len(source))))
        rows = [[row for row, (bucket, _) in enumerate(assigned) if bucket == b] for b in range(len(self.buckets))]
        self._rows = np.asarray([row for members in rows for row in members], np.int64)  # Index -> video row.
        self._offsets = np.cumsum([0, *map(len, rows)])
        self._bucket_of = np.repeat(np.arange(len(self.buckets)), [len(members) for members in rows])
        self.bucket_members = tuple(np.arange(self._offsets[b], self._offsets[b + 1]) for b in range(len(rows)))
        unreadable = [reason for bucket, reason in assigned if bucket is None and reason]
        too_short = sum(bucket is None and not reason for bucket, reason in assigned)
        summary = ", ".join(f"{b}: {len(m)} clips" for b, m in zip(self.buckets, rows, strict=True))
        logging.info("Buckets: %s", summary)
        if too_short or unreadable:
            logging.warning(
                "Left out of every bucket: %d videos too short for all of them, %d unreadable%s",
                too_short,
                len(unreadable),
                f" (e.g. {'; '.join(unreadable[:3])})" if unreadable else "",
            )
        if not len(self._rows):
            raise UserError(
                f"no video of {source!r} fills any of data.buckets ({summary}; {too_short} too short, "
                f"{len(unreadable)} unreadable); add buckets with fewer frames or check data.frame_stride / "
                "data.target_fps"
            )

    def _assign(self, row: int) -> tuple[int | None, str]:
        """(bucket of video `row` or None, why it has none: '' for too short, else the read error)."""
        try:
            record = self._source.record(row)
            info = probe_video(record.media)
        except Exception as err:  # noqa: BLE001 -- one unreadable file is left out, not fatal
            return None, f"{self._source.name(row)}: {type(err).__name__}: {err}"
        return assign_bucket(self.buckets, self._source.spec, info, start=record.start, end=record.end), ""

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"BucketedVideoSource({self._source!r}, buckets={[str(b) for b in self.buckets]})"

    def __getitem__(self, index: int) -> dict[str, np.ndarray | str]:
        return self.read(index, epoch=0)

    def bucket_of(self, index: int) -> int:
        return int(self._bucket_of[index])

    def read(self, index: int, epoch: int = 0) -> dict[str, np.ndarray | str]:
        """Clip `index` at its bucket's shape for `epoch`; a bad file falls back within the bucket."""
        bucket = self.bucket_of(index)
        tried = self._cycle(index, range(min(self._bucket_size(bucket), MAX_CONSECUTIVE_FAILURES)))
        element = self._source.first_good([int(self._rows[i]) for i in tried], epoch, self._specs[bucket])
        element["source_index"] = np.asarray(tried[int(element["bad_files"])], np.int32)
        return element

    def skipped_indices(self, index: int, skipped: int) -> list[int]:
        """The indices an element read as `index` after `skipped` bad files fell back from, in order."""
        return self._cycle(index, range(-skipped, 0))

    def describe_failure(self, index: int) -> str:
        return self._source.describe_failure(int(self._rows[index]), self._specs[self.bucket_of(index)])

    def _bucket_size(self, bucket: int) -> int:
        return int(self._offsets[bucket + 1] - self._offsets[bucket])

    def _cycle(self, index: int, steps: range) -> list[int]:
        """`index + k` for k in `steps`, wrapping around within index's bucket."""
        bucket = self.bucket_of(index)
        low, size = int(self._offsets[bucket]), self._bucket_size(bucket)
        return [low + (index - low + k) % size for k in steps]
