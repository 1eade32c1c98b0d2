"""Compiled memory of Wan 2.1's VAE decoding (or encoding) a clip, from abstract parameters: nothing is allocated.

    python -m benchmarks.wan_vae_memory --frames 81 --height 480 --width 832 [--dtype bfloat16] [--encode]

Builds the released Wan 2.1 VAE's architecture (`WanVAEConfig()` defaults) with `nnx.eval_shape`, compiles
`decode` (or `encode`) for one clip on the default backend and prints XLA's memory analysis: parameters
and inputs (arguments), the output, and the temporaries, which is the chunked network's working set.
"""

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models.layers import Precision
from pyoco_jax.models.vae.wan import WanVAE
from pyoco_jax.models.vae.wan_config import WanVAEConfig


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.3f} GiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=81, help="video frames, 1 + 4k")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", help="compute dtype; parameters stay float32")
    parser.add_argument("--encode", action="store_true", help="measure encode instead of decode")
    args = parser.parse_args(argv)

    config = WanVAEConfig()
    precision = Precision(jnp.dtype(args.dtype))
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanVAE(config, precision=precision, rngs=nnx.Rngs(0))))
    if args.encode:
        shape = (args.batch, args.frames, args.height, args.width, config.in_channels)
    else:
        factor = config.spatial_factor
        latent_frames = 1 + (args.frames - 1) // config.temporal_factor
        shape = (args.batch, latent_frames, args.height // factor, args.width // factor, config.z_dim)
    method = "encode" if args.encode else "decode"
    fn = jax.jit(lambda state, x: getattr(nnx.merge(graphdef, state), method)(x))
    start = time.perf_counter()
    compiled = fn.lower(state, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    params = sum(x.size for x in jax.tree.leaves(state))
    print(f"Wan 2.1 VAE ({params:,} params) {method} of {shape} on {jax.default_backend()}, {args.dtype} compute")
    print(f"compile: {seconds:.1f} s")
    print(f"arguments: {_gib(memory.argument_size_in_bytes)}")
    print(f"output: {_gib(memory.output_size_in_bytes)}")
    print(f"temporaries: {_gib(memory.temp_size_in_bytes)}")
    total = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    print(f"total (arguments + output + temporaries): {_gib(total - memory.alias_size_in_bytes)}")


if __name__ == "__main__":
    main()
