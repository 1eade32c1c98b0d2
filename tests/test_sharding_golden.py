"""The PartitionSpec of every param, under a config's rules on a fixed mesh, against a checked-in file, so a
change to the rules or to a param's logical names shows up as a reviewable diff. Cases: the small tiny
model (default rules, data=2 fsdp=2 tensor=2), and the Wan2.1 1.3B and 14B DiTs with their configs' rules
on 8 host devices (abstract shapes only: nothing of the 14B is allocated).

After an intended change, regenerate the files and review their diff:
    PYOCO_UPDATE_GOLDEN=1 python -m pytest tests/test_sharding_golden.py
"""

import json
import math
import os
import pathlib
import re

import jax
import pytest
from jax.sharding import PartitionSpec

from pyoco_jax import parallel
from pyoco_jax.config import load_config
from pyoco_jax.train.build import build_run
from tests.train.helpers import REPO, fast_config

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _wan(name: str, *overrides: str):
    return load_config(str(REPO / "configs" / f"{name}.py"), overrides, reads_data=False)


# Golden file stem -> the config it describes (the mesh is in the name).
CASES = {
    "tiny_fast_d2_f2_t2": lambda: fast_config("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"),
    "wan21_1_3b_fsdp4_tensor2": lambda: _wan("wan21_1_3b", "mesh.fsdp=4", "mesh.tensor=2"),
    "wan21_14b_fsdp2_tensor4": lambda: _wan("wan21_14b", "mesh.fsdp=2", "mesh.tensor=4"),
}
# The DiT's attention and feed-forward matrices: what tensor parallelism must split.
_SPLIT_MATRICES = re.compile(r"blocks/(attn[12]/(to_q|to_k|to_v|to_out)|ffn/proj_(in|out))/kernel$")
LARGE = 1 << 20  # Elements from which a parameter must be sharded on fsdp.


def _dim(axes) -> str:
    return "-" if axes is None else "+".join(axes) if isinstance(axes, tuple) else axes


def _specs(config) -> dict[str, str]:
    """'path/to/param' -> 'shape: per-dim mesh axes' (- replicated, a+b for a dim split over two axes)."""
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


def _axes(entry: str) -> set[str]:
    """The mesh axes a table entry ('shape: axes per dim') shards over."""
    return {axis for dim in entry.split(": ", 1)[1].split() for axis in dim.split("+") if axis != "-"}


def _check_dit_layout(table: dict[str, str]) -> None:
    """Large params on fsdp, attention/FFN matrices on tensor; what stays replicated is a sliver of the model."""
    sizes = {name: math.prod(int(d) for d in entry.split(":")[0].split("x")) for name, entry in table.items()}
    on_fsdp = {name for name, entry in table.items() if "fsdp" in _axes(entry)}
    # Per-block modulation tables ((layers, 1, 6, width)) have only the residual width to split, which the
    # Wan rules keep whole; like biases and norms they are vectors per layer.
    unsharded = [n for n in table if sizes[n] >= LARGE and n not in on_fsdp and "scale_shift_table" not in n]
    assert not unsharded, f"large params not sharded on fsdp: {[(n, table[n]) for n in unsharded]}"
    matrices = [name for name in table if _SPLIT_MATRICES.search(name)]
    assert len(matrices) == 10, matrices
    not_split = [name for name in matrices if "tensor" not in _axes(table[name])]
    assert not not_split, f"attention/FFN weights not split on tensor: {[(n, table[n]) for n in not_split]}"
    replicated = sum(size for name, size in sizes.items() if name not in on_fsdp)
    assert replicated < 0.005 * sum(sizes.values()), f"{replicated} of {sum(sizes.values())} elements not on fsdp"


@pytest.mark.parametrize("case", list(CASES))
def test_param_partition_specs_match_the_golden_file(case):
    golden = GOLDEN / f"sharding_{case}.json"
    actual = _specs(CASES[case]())
    if os.environ.get("PYOCO_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(json.dumps(actual, indent=0, sort_keys=True) + "\n")
    expected = json.loads(golden.read_text())
    assert actual.keys() == expected.keys(), "params were added or removed; regenerate (see the module docstring)"
    changed = {name: (expected[name], actual[name]) for name in expected if expected[name] != actual[name]}
    assert not changed, f"partition specs changed (expected, actual); regenerate if intended: {changed}"
    assert any("fsdp" in entry for entry in actual.values()) and any("tensor" in entry for entry in actual.values())
    if case.startswith("wan21"):
        _check_dit_layout(actual)
