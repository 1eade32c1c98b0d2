"""What every builder here shares: one record layout (so one source reads them all) and a base class."""

import inspect

import numpy as np
import tensorflow_datasets as tfds
from etils import epath


class EncodedVideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose records hold the original video files; array_record, so no TensorFlow is needed."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs `importlib_resources` for builders in a package on Python >= 3.9; the
        # module's file is what it would find.
        return epath.Path(inspect.getfile(cls))


def video_features() -> tfds.features.FeaturesDict:
    """encoded_video: the file's bytes, decoded at read time; end < 0 means the end of the file."""
    return tfds.features.FeaturesDict(
        {
            "encoded_video": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.ClassLabel(),  # Names set when the dataset is built.
            "caption": tfds.features.Text(),
            "path": tfds.features.Text(),
            "start": tfds.features.Tensor(shape=(), dtype=np.float32),
            "end": tfds.features.Tensor(shape=(), dtype=np.float32),
        }
    )


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
