"""The real-video sources behind `data.source`: video_folder, tfds and ucf101, built from the data config.

Importing this module stays cheap (no PyAV, no TFDS) until a source is built.
"""

from typing import TYPE_CHECKING

import ml_collections

from pyoco_jax.data.clip_sampling import ClipSpec

if TYPE_CHECKING:
    from pyoco_jax.data.video_source import VideoClipSource

VIDEO_SOURCES = ("video_folder", "tfds", "ucf101")
UCF101_SPLITS = (1, 2, 3)  # The official train/test splits.


def ucf101_name(split: int) -> str:
    """The TFDS name of official UCF-101 split 1, 2 or 3."""
    return f"pyoco_ucf101/split{split}"


def clip_spec(data_config: ml_collections.ConfigDict) -> ClipSpec:
    """What every clip looks like: frames, square resolution, temporal sampling, crop and flip."""
    return ClipSpec(
        num_frames=data_config.num_frames,
        height=data_config.resolution,
        width=data_config.resolution,
        frame_stride=data_config.frame_stride,
        target_fps=float(data_config.target_fps),
        temporal=data_config.temporal_sampling,
        crop=data_config.crop,
        flip=data_config.flip,
    )


def make_video_source(
    data_config: ml_collections.ConfigDict, *, seed: int = 0, with_captions: bool = False, process_count: int = 1
) -> "VideoClipSource":
    """The source for `data.source` in VIDEO_SOURCES; `with_captions` adds a str `caption` to each element.

    `seed` varies the random clips, crops and flips (per example and epoch). With
    data.source='ucf101' and data.path set, a single-process run builds the TFDS
    dataset from the official files on first use.
    """
    name = data_config.source
    if data_config.channels != 3:
        raise ValueError(f"data.source={name!r} decodes RGB video: data.channels must be 3, not {data_config.channels}")
    spec = clip_spec(data_config)
    common = dict(num_classes=data_config.num_classes, seed=seed, with_captions=with_captions)
    if name == "video_folder":
        from pyoco_jax.data.video_folder import VideoFolderSource

        return VideoFolderSource(
            data_config.path, spec, metadata=data_config.metadata, split=data_config.split, **common
        )
    from pyoco_jax.data.tfds_source import TfdsVideoSource

    if name == "tfds":
        return TfdsVideoSource(
            data_config.tfds_name, spec, split=data_config.split, data_dir=data_config.tfds_data_dir, **common
        )
    if name == "ucf101":
        if data_config.path and process_count == 1:
            from pyoco_jax.data.builders.ucf101 import prepare_ucf101

            prepare_ucf101(data_config.path, data_config.tfds_data_dir or None, split=data_config.ucf101_split)
        return TfdsVideoSource(
            ucf101_name(data_config.ucf101_split),
            spec,
            split=data_config.split,
            data_dir=data_config.tfds_data_dir,
            **common,
        )
    raise ValueError(f"{name!r} is not a video source; choose one of {VIDEO_SOURCES}")
