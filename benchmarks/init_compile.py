"""Compile time of random initialisation: one threefry kernel per parameter against one draw for all.

    python -m benchmarks.init_compile [--config configs/noise_prior_study.py] [--draws 150]

Times `jax.jit(...).lower().compile()` of (a) `--draws` `jax.random.normal` draws of distinct shapes, as a
model's initialisers make them, (b) one draw of their total size sliced into the same shapes, and (c) the
config's own `init_state` (model, optimizer state, EMA), with its fusion count. Why: a state's compile
grows with its number of parameters, not their size (benchmarks/README.md, "Compile time of the state's
initialisation").
"""

import argparse
import math
import time

import jax
import numpy as np

from pyoco_jax.config import load_config
from pyoco_jax.train.build import build_run


def _shapes(count: int) -> list[tuple[int, int]]:
    """Distinct 2-D shapes of a few thousand elements each."""
    return [((i % 7 + 1) * 8 * (1 + i // 50), 16 + i) for i in range(count)]


def _seconds_to_compile(fn, *args) -> tuple[float, str]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start, compiled.as_text()


def per_shape_draws(key: jax.Array, shapes: list[tuple[int, int]]) -> list[jax.Array]:
    return [jax.random.normal(k, s) for k, s in zip(jax.random.split(key, len(shapes)), shapes, strict=True)]


def one_draw_sliced(key: jax.Array, shapes: list[tuple[int, int]]) -> list[jax.Array]:
    sizes = [math.prod(s) for s in shapes]
    starts = np.cumsum([0, *sizes])
    flat = jax.random.normal(key, (int(starts[-1]),))
    return [flat[a : a + n].reshape(s) for a, n, s in zip(starts[:-1], sizes, shapes, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/noise_prior_study.py")
    parser.add_argument("--draws", type=int, default=150)
    args = parser.parse_args()
    shapes, key = _shapes(args.draws), jax.random.key(0)
    for name, fn in (("per-shape draws", per_shape_draws), ("one draw, sliced", one_draw_sliced)):
        seconds, _ = _seconds_to_compile(lambda k, fn=fn: fn(k, shapes), key)
        print(f"{name:18s} {args.draws} tensors: compiled in {seconds:.1f} s", flush=True)

    config = load_config(args.config, reads_data=False)
    parts = build_run(config)
    seconds, text = _seconds_to_compile(lambda: parts.init_state(config))
    tensors = len(jax.tree.leaves(parts.abstract_state.params)) + len(jax.tree.leaves(parts.abstract_state.frozen))
    print(f"init_state of {args.config}: {tensors} parameter tensors, {text.count(' fusion(')} fusions, "
          f"compiled in {seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
