"""The PartitionSpec of every param of the small tiny model, under the default rules on a data=2 fsdp=2
tensor=2 mesh, against a checked-in file, so a change to the rules or to a param's logical names shows
up as a reviewable diff.

After an intended change, regenerate the file and review its diff:
    PYOCO_UPDATE_GOLDEN=1 python -m pytest tests/test_sharding_golden.py
"""

import json
import os
import pathlib

import jax
from jax.sharding import PartitionSpec

from pyoco_jax import parallel
from pyoco_jax.train.build import build_run
from tests.train.helpers import fast_config

GOLDEN = pathlib.Path(__file__).parent / "golden" / "sharding_tiny_fast_d2_f2_t2.json"


def _dim(axes) -> str:
    return "-" if axes is None else "+".join(axes) if isinstance(axes, tuple) else axes


def _specs() -> dict[str, str]:
    """'path/to/param' -> 'shape: per-dim mesh axes' (- replicated, a+b for a dim split over two axes)."""
    config = fast_config("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    parts = build_run(config)
    mesh = parallel.make_mesh(config.mesh)
    specs = parallel.partition_specs(parts.abstract_state.params, mesh, parallel.logical_rules(config.mesh))
    flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
    shapes = jax.tree.leaves(parts.abstract_state.params)
    table = {}
    for (path, spec), shape in zip(flat, shapes, strict=True):
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path if getattr(k, "name", "") != "value"]
        padded = tuple(spec) + (None,) * (len(shape.shape) - len(spec))
        table["/".join(keys)] = f"{'x'.join(map(str, shape.shape))}: {' '.join(_dim(a) for a in padded)}"
    return table


def test_param_partition_specs_match_the_golden_file():
    actual = _specs()
    if os.environ.get("PYOCO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=0, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert actual.keys() == expected.keys(), "params were added or removed; regenerate (see the module docstring)"
    changed = {name: (expected[name], actual[name]) for name in expected if expected[name] != actual[name]}
    assert not changed, f"partition specs changed (expected, actual); regenerate if intended: {changed}"
    assert any("fsdp" in entry for entry in actual.values()) and any("tensor" in entry for entry in actual.values())
