"""FVD on real synthetic clips: small between two disjoint real sets, larger as one set is degraded, and
rising monotonically with the strength of one degradation (pixel noise of growing std).

The protocol `fvd24_8f` (24 clips of 8 frames, repeated to I3D's 16 like `fvd256_8f`) keeps the CPU time
near two minutes. With 24 clips the 400-d covariances are singular, so absolute values are not comparable to
published FVDs; the ordering is what is tested, on fixed seeds (deterministic).
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from pyoco_jax import parallel
from pyoco_jax.data.synthetic import SyntheticVideoSource
from pyoco_jax.evaluate.fvd import I3DFeatures, fvd, video_stats
from pyoco_jax.evaluate.fvd_protocol import get_protocol
from tests.train.helpers import REPO, single_device_env

pytestmark = pytest.mark.slow

CLIPS = 24
PROTOCOL = get_protocol(f"fvd{CLIPS}_8f")
NOISE_STDS = (8, 24, 64)  # Pixel noise in uint8 levels, the same draw scaled: each set degrades the one before.


def real_clips(start: int) -> np.ndarray:
    source = SyntheticVideoSource(4 * CLIPS, 8, 32, num_classes=4, seed=0)
    return np.stack([source[i]["video"] for i in range(start, start + CLIPS)])


@pytest.fixture(scope="module")
def distances(tmp_path_factory) -> dict[str, float]:
    """The distances, computed in a child process at XLA's default optimisation: I3D over 192 clips is
    run-bound, and the suite's quick-compile setting (tests/xla_flags.py) doubled this fixture's time."""
    env = {name: value for name, value in single_device_env().items() if name != "XLA_FLAGS"}
    command = [sys.executable, "-m", "tests.evaluate.test_fvd", str(tmp_path_factory.mktemp("i3d"))]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


def degradation_distances(cache: str) -> dict[str, float]:
    """FVD to a real reference set of a disjoint real set and of degraded copies of it."""
    features = I3DFeatures(PROTOCOL, batch_size=8, cache=cache)
    reference = video_stats(features, real_clips(0))
    other = real_clips(CLIPS)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, other.shape)
    noisy = {f"noise{std}": np.clip(other + std * noise, 0, 255).astype(np.uint8) for std in NOISE_STDS}
    frozen = np.repeat(other[:, :1], other.shape[1], axis=1)
    shuffled = other[:, rng.permutation(other.shape[1])]
    sets = {"real": other, "frozen": frozen, "shuffled": shuffled, **noisy}
    return {name: float(fvd(reference, video_stats(features, videos))) for name, videos in sets.items()}


def test_disjoint_real_sets_are_closer_than_any_degraded_set(distances):
    for name in distances.keys() - {"real"}:
        assert distances["real"] < distances[name], distances


def test_fvd_rises_monotonically_with_pixel_noise(distances):
    graded = [distances["real"]] + [distances[f"noise{std}"] for std in NOISE_STDS]
    assert graded == sorted(graded) and len(set(graded)) == len(graded), distances
    assert graded[-1] > 2 * graded[0], distances  # Heavy noise far exceeds the real sets' distance.


def test_features_sharded_over_the_mesh_equal_one_devices(tmp_path):
    mesh = jax.sharding.Mesh(  # Four devices on the data axis, as a data-parallel training mesh.
        np.array(jax.devices()[:4]).reshape(4, 1, 1, 1), parallel.MESH_AXES
    )
    videos = real_clips(0)[:6]  # Not a multiple of the batch: the last batch is padded and trimmed.
    sharded = I3DFeatures(PROTOCOL, mesh=mesh, batch_size=4, cache=tmp_path)(videos)
    single = I3DFeatures(PROTOCOL, batch_size=4, cache=tmp_path)(videos)
    assert sharded.shape == (6, 400)
    np.testing.assert_allclose(sharded, single, atol=1e-4)  # Same XLA ops per row; only the placement differs.


if __name__ == "__main__":
    print(json.dumps(degradation_distances(sys.argv[1])))
