"""Compile time of the DiT's gradient by depth: blocks under one `lax.scan` against a Python loop over them.

    python -m benchmarks.dit_compile --layers 4,8,16 [--width 1536 --heads 12 --ffn 8960 --tokens 1600]

Lowers and compiles (XLA, on this machine's backend) the gradient of a mean-square loss through a
WanTransformer of each depth, from abstract parameters (nothing is allocated), once with scanned blocks and
once unrolled; the scanned time should stay flat in depth, the unrolled one grow with it. Reports seconds.
"""

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models.dit import WanConfig, WanTransformer


def compile_seconds(config: WanConfig, scan_layers: bool, tokens_side: int, text_tokens: int) -> float:
    """Seconds to lower and compile d(loss)/d(params) for one clip of 1 x side x side patches."""
    model = nnx.eval_shape(lambda: WanTransformer(config, scan_layers=scan_layers, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    side = tokens_side * config.patch_size[1]
    x = jax.ShapeDtypeStruct((1, 1, side, side, config.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    context = jax.ShapeDtypeStruct((1, text_tokens, config.text_dim), jnp.float32)

    def loss(params, x, t, context):
        return jnp.mean(nnx.merge(graphdef, params)(x, t, context=context) ** 2)

    begin = time.perf_counter()
    jax.jit(jax.grad(loss)).lower(params, x, t, context).compile()
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="4,8,16", help="comma-separated depths")
    parser.add_argument("--width", type=int, default=1536, help="heads x head_dim (Wan2.1-1.3B: 1536)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=8960)
    parser.add_argument("--tokens", type=int, default=40, help="patches per side of the one frame")
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}; width {args.width}, {args.tokens}x{args.tokens} patches")
    print("| layers | scan compile s | unrolled compile s |")
    print("|---|---|---|")
    for layers in (int(n) for n in args.layers.split(",")):
        config = WanConfig(
            num_attention_heads=args.heads,
            attention_head_dim=args.width // args.heads,
            in_channels=16,
            out_channels=16,
            text_dim=64,
            ffn_dim=args.ffn,
            num_layers=layers,
        )
        scanned, unrolled = (compile_seconds(config, scan, args.tokens, text_tokens=8) for scan in (True, False))
        print(f"| {layers} | {scanned:.1f} | {unrolled:.1f} |", flush=True)


if __name__ == "__main__":
    main()
