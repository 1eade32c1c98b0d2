"""FVD of videos by a named protocol: I3D logits of the protocol's clips -> fitted Gaussians -> Frechet distance.

Real-data statistics are fitted once and cached (`real_stats.cached_stats`), so an evaluation featurises
only the generated side. The I3D forward is one jitted program; with a mesh, each batch is placed on its
data axes like a training batch, so every device featurises its own rows.
"""

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from pyoco_jax import parallel
from pyoco_jax.evaluate.frechet import FeatureStats, fit_gaussian, frechet_distance_of
from pyoco_jax.evaluate.fvd_protocol import FVDProtocol, prepare_clips
from pyoco_jax.evaluate.i3d import pretrained_i3d


class I3DFeatures:
    """Callable: videos (N, F, H, W, 3) as the protocol takes them -> (N, 400) float64 I3D logits."""

    def __init__(self, protocol: FVDProtocol, *, mesh: Mesh | None = None, batch_size: int = 8, cache=None):
        self.protocol = protocol
        graphdef, state = nnx.split(pretrained_i3d(cache))
        rows = 1 if mesh is None else parallel.data_parallel_size(mesh)
        self.batch_size = -(-batch_size // rows) * rows  # A multiple of the data-parallel size.
        self._sharding = None if mesh is None else parallel.batch_sharding(mesh)
        state = state if mesh is None else jax.device_put(state, parallel.replicated(mesh))
        self._state = state
        self._forward = jax.jit(lambda state, clips: nnx.merge(graphdef, state)(clips))

    def __call__(self, videos: np.ndarray) -> np.ndarray:
        features = []
        batches = range(0, len(videos), self.batch_size)
        for start in tqdm(batches, desc="I3D features", unit="batch", disable=len(batches) < 4):
            chunk = prepare_clips(self.protocol, videos[start : start + self.batch_size])
            count = len(chunk)
            padded = np.concatenate([chunk, np.zeros((self.batch_size - count, *chunk.shape[1:]), chunk.dtype)])
            clips = padded if self._sharding is None else jax.device_put(padded, self._sharding)
            features.append(np.asarray(self._forward(self._state, clips), np.float64)[:count])
        return np.concatenate(features)


def video_stats(features: I3DFeatures, videos: np.ndarray) -> FeatureStats:
    """The Gaussian fitted to the I3D features of `videos`."""
    return fit_gaussian(features(videos))


def fvd(real: FeatureStats, generated: FeatureStats) -> float:
    """Frechet Video Distance between the fitted real and generated feature Gaussians (lower is closer)."""
    return frechet_distance_of(real, generated)
