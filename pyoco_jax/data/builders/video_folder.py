"""`pyoco_video_folder`: any folder of videos plus a metadata file, as a TFDS dataset.

The manual dir is the folder; its metadata file (see `pyoco_jax.data.metadata`)
gives the rows, and an optional `split` column the splits (rows without one go
to `train`). Rows whose file is missing are left out with a warning; other bad
files are stored as they are and skipped at read time like in a folder.
"""

import os

import tensorflow_datasets as tfds
from absl import logging

from pyoco_jax.data.builders.features import EncodedVideoBuilder, read_bytes, video_features
from pyoco_jax.data.metadata import VideoRow, read_metadata, resolve_metadata


class PyocoVideoFolder(EncodedVideoBuilder):
    """Videos of a folder with a metadata file; labels are the metadata's class indices."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "The manual dir is the video folder, with metadata.csv or metadata.jsonl in it."

    def __init__(self, *, metadata: str = "", **kwargs):
        self._metadata = metadata
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Encoded videos of a folder with captions / labels from its metadata file.",
            features=video_features(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folder = os.fspath(dl_manager.manual_dir)
        rows = read_metadata(resolve_metadata(folder, self._metadata))
        labels = [row.label for row in rows if row.label is not None]
        self.info.features["label"].names = [str(i) for i in range(max(labels) + 1)] if labels else ["unlabelled"]
        splits: dict[str, list[tuple[int, VideoRow]]] = {}
        for number, row in enumerate(rows):
            splits.setdefault(row.split or "train", []).append((number, row))
        return {split: self._generate_examples(folder, numbered) for split, numbered in sorted(splits.items())}

    def _generate_examples(self, folder: str, rows: list[tuple[int, VideoRow]]):
        missing = []
        for number, row in rows:
            path = os.path.join(folder, row.path)
            if not os.path.isfile(path):
                missing.append(row.path)
                continue
            yield (
                f"{number:09d}",
                {
                    "encoded_video": read_bytes(path),
                    "label": row.label or 0,
                    "caption": row.caption,
                    "path": row.path,
                    "start": row.start,
                    "end": -1.0 if row.end is None else row.end,
                },
            )
        if missing:
            logging.warning("Left out %d rows whose video file is missing: %s", len(missing), ", ".join(missing[:20]))


def prepare_video_folder(folder: str, data_dir: str | None, *, metadata: str = "") -> PyocoVideoFolder:
    """Builds (once) the dataset of `folder` under `data_dir`; read it with data.source='tfds'."""
    builder = PyocoVideoFolder(data_dir=data_dir, metadata=metadata, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=folder))
    return builder
