"""TFDS builders (array_record files, no TensorFlow) that store the original encoded video files.

Importing this package registers `pyoco_video_folder` and `pyoco_ucf101/split{1,2,3}`
with TFDS, so `tfds.data_source(name, split=..., data_dir=...)` finds them. The
clips are decoded at read time by `pyoco_jax.data.tfds_source.TfdsVideoSource`.
"""

from pyoco_jax.data.builders.ucf101 import PyocoUcf101, prepare_ucf101
from pyoco_jax.data.builders.video_folder import PyocoVideoFolder, prepare_video_folder

__all__ = ["PyocoUcf101", "PyocoVideoFolder", "prepare_ucf101", "prepare_video_folder"]
