import os, time
os.environ["XLA_FLAGS"]="--xla_force_host_platform_device_count=8"; os.environ["JAX_PLATFORMS"]="cpu"
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from configs.default import get_config
from pyoco_jax.data.loader import make_source, make_loader
if __name__ == "__main__":
    c = get_config().data
    c.num_examples = 64; c.num_classes = 4
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sh = NamedSharding(mesh, P("data"))
    src = make_source(c)
    for w in (0, 2):
        c.worker_count = w
        t = time.perf_counter()
        ld = make_loader(c, src, sh, seed=3)
        b = [next(ld) for _ in range(3)]
        st = ld.get_state(); rest = [next(ld) for _ in range(2)]
        ld.close()
        del b, rest; import gc; gc.collect(); print(w, time.perf_counter() - t, st)
