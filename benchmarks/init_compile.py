"""Compile time of a fresh training state: one threefry kernel per parameter against one stream for all.

    python -m benchmarks.init_compile [--config configs/noise_prior_study.py] [--config.key=value ...]

Times `jax.jit(...).lower().compile()` of the config's state (model, optimizer state, EMA) made three ways:
as the model's initialisers draw it (one threefry kernel per parameter), as `RunParts.init_state` draws it
(`pyoco_jax/train/one_draw.py`: one stream, a kernel per 2^26 elements), and as a sharded state draws it
(the same values, each draw's stretch computed where it lies: a kernel per draw again). Prints each one's
fusion count. Why: the state's compile grows with its number of random draws, not their size
(benchmarks/README.md).
"""

import argparse
import sys
import time

import jax

from benchmarks.train_step import parse_with_overrides
from pyoco_jax.config import load_config
from pyoco_jax.train.build import build_run, fresh_state


def _compile(fn) -> tuple[float, int]:
    start = time.perf_counter()
    text = jax.jit(fn).lower().compile().as_text()
    return time.perf_counter() - start, text.count(" fusion(")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/noise_prior_study.py")
    args, overrides = parse_with_overrides(parser, sys.argv[1:] if argv is None else argv)
    config = load_config(args.config, overrides, reads_data=False)
    parts = build_run(config)
    tensors = len(jax.tree.leaves(parts.abstract_state.params)) + len(jax.tree.leaves(parts.abstract_state.frozen))
    print(f"{args.config} {' '.join(overrides)}: {tensors} parameter tensors")
    ways = (
        ("one kernel per parameter", lambda: fresh_state(config, parts.optimizer)),
        ("one stream (init_state)", lambda: parts.init_state(config)),
        ("sharded (same values)", lambda: parts.init_state(config, sharded=True)),
    )
    for name, fn in ways:
        seconds, fusions = _compile(fn)
        print(f"{name:26s} compiled in {seconds:6.1f} s, {fusions} fusions", flush=True)


if __name__ == "__main__":
    main()
