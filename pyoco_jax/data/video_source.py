"""Random access to decoded clips, robust to bad files: the base of the video-folder and TFDS sources.

A bad file (missing, empty, corrupt, truncated, too short, no video stream)
never stops training: `read(index, epoch)` falls back to the next index until
one decodes, and the element records how many files it skipped (`bad_files`),
because grain workers are separate processes whose counters the trainer cannot
see. The loader sums that field. Each process logs a failing file once, with
its name and reason, and keeps them in `failures`.

Elements: video uint8 (F, H, W, 3), label int32, fps float32 (the clip's frame
rate as sampled), bad_files int32, source_index int32 (the index actually read;
the skipped ones are the `bad_files` indices before it, cyclically), and with
`with_captions=True` also caption (str; strings never reach the device batch).
"""

import abc
import dataclasses
from collections.abc import Sequence

import numpy as np
from absl import logging

from pyoco_jax.data.clip_sampling import ClipDraws, ClipSpec
from pyoco_jax.data.decode import Media, decode_clip
from pyoco_jax.errors import UserError

MAX_CONSECUTIVE_FAILURES = 64  # This many bad files in a row means a broken dataset, not a few bad files.


class TooManyBadFilesError(UserError):
    """Every file tried for one element failed; the message names them and why."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    name: str  # Path (or key) shown in logs and errors.
    media: Media  # A file path or the encoded file's bytes.
    label: int
    caption: str
    start: float = 0.0
    end: float | None = None  # None: to the end of the file.


class VideoClipSource(abc.ABC):
    """A grain random-access source of clips decoded from encoded videos (see the module docstring)."""

    def __init__(self, spec: ClipSpec, *, seed: int = 0, with_captions: bool = False, decode_threads: int = 0):
        self.spec = spec
        self.seed = seed
        self.with_captions = with_captions
        self.decode_threads = decode_threads
        self.failures: dict[int, str] = {}  # index -> "name: reason", for the files this process failed to read.

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def record(self, index: int) -> VideoRecord:
        """The encoded video and its metadata (may raise for a missing file)."""

    @abc.abstractmethod
    def name(self, index: int) -> str:
        """A human-readable name of example `index` (its path)."""

    def caption(self, index: int) -> str:
        """The caption of example `index`, without decoding it (for computing text embeddings)."""
        return self.record(index).caption

    def __getitem__(self, index: int) -> dict[str, np.ndarray | str]:
        return self.read(index, epoch=0)

    def read(self, index: int, epoch: int = 0) -> dict[str, np.ndarray | str]:
        """Element `index` for `epoch` (the epoch varies the random clip), skipping bad files."""
        size = len(self)
        index = int(index) % size
        return self.first_good([(index + k) % size for k in range(min(size, MAX_CONSECUTIVE_FAILURES))], epoch)

    def first_good(
        self, candidates: Sequence[int], epoch: int = 0, spec: ClipSpec | None = None
    ) -> dict[str, np.ndarray | str]:
        """The clip (of `spec`, default the source's) of the first of `candidates` whose file decodes.

        Its `bad_files` is how many candidates failed before it; at most MAX_CONSECUTIVE_FAILURES are tried.
        """
        tried = []
        for skipped, current in enumerate(candidates[:MAX_CONSECUTIVE_FAILURES]):
            try:
                element = self.clip(current, epoch, spec)
            except Exception as err:  # noqa: BLE001 -- any failure of one file is that file's problem
                self._record_failure(current, err)
                tried.append(self.failures[current])
                continue
            element["bad_files"] = np.asarray(skipped, np.int32)
            element["source_index"] = np.asarray(current, np.int32)
            return element
        raise TooManyBadFilesError(
            f"{len(tried)} videos in a row failed to load (indices {candidates[0]}..{candidates[len(tried) - 1]}); "
            f"the dataset looks broken. First failures: {'; '.join(tried[:5])}"
        )

    def clip(self, index: int, epoch: int = 0, spec: ClipSpec | None = None) -> dict[str, np.ndarray | str]:
        """Example `index` with no fallback (of `spec`, default the source's): raises if its file is bad."""
        record = self.record(index)
        decoded = decode_clip(
            record.media,
            spec or self.spec,
            ClipDraws.for_example(self.seed, index, epoch),
            start=record.start,
            end=record.end,
            threads=self.decode_threads,
        )
        element: dict[str, np.ndarray | str] = {
            "video": decoded.frames,
            "label": np.asarray(record.label, np.int32),
            "fps": np.asarray(decoded.fps, np.float32),
        }
        if self.with_captions:
            element["caption"] = record.caption
        return element

    def describe_failure(self, index: int, spec: ClipSpec | None = None) -> str:
        """'name: reason' for a failing example (tries it again here, as workers keep their own logs)."""
        if index not in self.failures:
            try:
                self.clip(index, spec=spec)
            except Exception as err:  # noqa: BLE001 -- reported, not raised
                self.failures[index] = self._failure_text(index, err)
            else:
                return f"{self.name(index)}: reads fine now"
        return self.failures[index]

    def _failure_text(self, index: int, err: Exception) -> str:
        try:
            name = self.name(index)
        except Exception:  # noqa: BLE001 -- the name itself may be unreadable
            name = f"example {index}"
        return f"{name}: {type(err).__name__}: {err}"

    def _record_failure(self, index: int, err: Exception) -> None:
        if index not in self.failures:
            self.failures[index] = self._failure_text(index, err)
            logging.warning("Skipping a bad video (logged once per process): %s", self.failures[index])
