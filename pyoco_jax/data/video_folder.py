"""A folder of video files described by a metadata file (see `metadata.py`), read directly with PyAV."""

import os

from pyoco_jax.data.clip_sampling import ClipSpec
from pyoco_jax.data.decode import VideoDecodeError
from pyoco_jax.data.metadata import MetadataError, VideoRow, read_metadata, resolve_metadata, select_split
from pyoco_jax.data.video_source import VideoClipSource, VideoRecord


class VideoFolderSource(VideoClipSource):
    """Clips of the videos listed in `folder`'s metadata file (rows of `split`, in file order)."""

    def __init__(
        self,
        folder: str,
        spec: ClipSpec,
        *,
        metadata: str = "",
        split: str = "train",
        num_classes: int = 0,
        seed: int = 0,
        with_captions: bool = False,
        decode_threads: int = 0,
    ):
        super().__init__(spec, seed=seed, with_captions=with_captions, decode_threads=decode_threads)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"video folder {folder} does not exist")
        self.folder = folder
        self.metadata = resolve_metadata(folder, metadata)
        self.rows: list[VideoRow] = select_split(read_metadata(self.metadata), split, self.metadata)
        check_labels(self.rows, num_classes, self.metadata)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"VideoFolderSource({self.folder!r}, {len(self)} videos, metadata={self.metadata!r}, {self.spec})"

    def name(self, index: int) -> str:
        return os.path.join(self.folder, self.rows[index].path)

    def caption(self, index: int) -> str:
        return self.rows[index].caption

    def record(self, index: int) -> VideoRecord:
        row = self.rows[index]
        path = self.name(index)
        if os.stat(path).st_size == 0:  # Also raises FileNotFoundError for a missing file.
            raise VideoDecodeError("empty file (0 bytes)")
        return VideoRecord(path, path, row.label or 0, row.caption, row.start, row.end)


def check_labels(rows: list[VideoRow], num_classes: int, where: str) -> None:
    """Class-conditional training needs a label in range on every row."""
    if num_classes <= 0:
        return
    if rows[0].label is None:
        raise MetadataError(
            f"config key 'data.num_classes': {num_classes} classes, but {where} has no 'label' column; add one, or "
            "train unconditionally with --config.data.num_classes=0 --config.model.num_classes=0"
        )
    worst = max(rows, key=lambda row: row.label)
    if worst.label >= num_classes:
        raise MetadataError(
            f"config key 'data.num_classes': {where}: {worst.path} has label {worst.label}, outside "
            f"0..{num_classes - 1}; raise data.num_classes and model.num_classes"
        )
