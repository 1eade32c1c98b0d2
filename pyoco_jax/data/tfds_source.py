"""Clips from a prepared TFDS dataset of encoded videos (the builders in `pyoco_jax.data.builders`).

Random access through TFDS's array_record data source (no TensorFlow); the
stored file bytes are decoded in memory by the same code as a video folder, so
bad records are skipped and counted the same way.
"""

from pyoco_jax.data.clip_sampling import ClipSpec
from pyoco_jax.data.video_source import VideoClipSource, VideoRecord


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TfdsVideoSource(VideoClipSource):
    """Clips of split `split` of the prepared TFDS dataset `name` (e.g. 'pyoco_ucf101/split1') in `data_dir`."""

    def __init__(
        self,
        name: str,
        spec: ClipSpec,
        *,
        split: str = "train",
        data_dir: str = "",
        num_classes: int = 0,
        seed: int = 0,
        with_captions: bool = False,
        decode_threads: int = 0,
    ):
        super().__init__(spec, seed=seed, with_captions=with_captions, decode_threads=decode_threads)
        import tensorflow_datasets as tfds

        import pyoco_jax.data.builders  # noqa: F401 -- registers this project's builders with TFDS

        builder = tfds.builder(name, data_dir=data_dir or None)
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"the TFDS dataset {name!r} is not prepared in {builder.data_dir}; build it first (see "
                "pyoco_jax.data.builders.prepare_video_folder / prepare_ucf101) or point data.tfds_data_dir at it"
            )
        if split not in builder.info.splits:
            raise ValueError(f"the TFDS dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}")
        dataset_classes = builder.info.features["label"].num_classes
        if num_classes and dataset_classes > num_classes:
            raise ValueError(
                f"the TFDS dataset {name!r} has {dataset_classes} classes but data.num_classes={num_classes}; raise it"
            )
        self.dataset = f"{name} ({split}) in {builder.data_dir}"
        self.num_classes = dataset_classes
        self._data = builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"TfdsVideoSource({self.dataset}, {len(self)} videos, {self.spec})"

    def name(self, index: int) -> str:
        return f"{_text(self._data[index]['path'])} (record {index} of {self.dataset})"

    def record(self, index: int) -> VideoRecord:
        example = self._data[index]
        end = float(example["end"])
        return VideoRecord(
            name=_text(example["path"]),
            media=bytes(example["encoded_video"]),
            label=int(example["label"]),
            caption=_text(example["caption"]),
            start=float(example["start"]),
            end=None if end < 0 else end,
        )
