"""Two real JAX processes (CPU, gloo) load one global batch together."""

import textwrap

import numpy as np
import pytest

from pyoco_jax.data.loader import host_dataset
from pyoco_jax.data.synthetic import SyntheticVideoSource
from tests.data.two_processes import run_two_processes

_WORKER = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    from pyoco_jax.data.loader import Loader
    from pyoco_jax.data.synthetic import SyntheticVideoSource

    mesh = Mesh(np.array(jax.devices()), ("data",))
    loader = Loader(SyntheticVideoSource(24, 2, 8, num_classes=4), NamedSharding(mesh, PartitionSpec("data")),
                    global_batch_size=8, seed=7)
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))
    batches = []
    for _ in range(4):
        labels = next(loader)["label"]
        rows = {s.index[0].start: np.asarray(s.data).tolist() for s in labels.addressable_shards}
        batches.append({"shape": list(labels.shape), "rows": rows, "sum": int(total(labels))})
    print("RESULT " + json.dumps({"batches": batches, "state": loader.get_state()}))
    loader.close()
    """
)


@pytest.mark.slow
def test_two_processes_share_each_global_batch(tmp_path):
    results = run_two_processes(tmp_path, _WORKER, [[], []])
    source = SyntheticVideoSource(24, 2, 8, num_classes=4)
    expected = host_dataset(source, global_batch_size=8, process_index=0, process_count=1, seed=7)
    for n in range(4):
        rows = {}
        for result in results:
            batch = result["batches"][n]
            assert batch["shape"] == [8] and batch["sum"] == int(expected[n]["label"].sum())
            assert len(batch["rows"]) == 2  # Each process holds its two devices' shards of two rows.
            rows.update({int(start): values for start, values in batch["rows"].items()})
        assert sorted(rows) == [0, 2, 4, 6]
        np.testing.assert_array_equal(np.concatenate([rows[i] for i in (0, 2, 4, 6)]), expected[n]["label"])
    assert results[0]["state"] == results[1]["state"] and results[0]["state"]["position"] == 32
