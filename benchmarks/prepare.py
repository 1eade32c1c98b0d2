"""Seconds per clip of `pyoco-prepare` (VAE encoding + text encoding + shard writing) at Stable Diffusion size.

Builds a random-weight SD-1.5-shaped VAE (83.7M params) and a CLIP text encoder of SD-1.5's width
(diffusers / transformers, saved as safetensors), writes a few clips, and times `prepare`:

  python benchmarks/prepare.py --clips 4 --frames 16 --side 256
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _pipeline(folder: Path, text_layers: int) -> None:
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
    ).save_pretrained(folder / "vae")
    text = CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=text_layers, num_attention_heads=12
    )
    CLIPTextModel(text).save_pretrained(folder / "text_encoder")
    from tests.models.clip_testing import save_vocab  # The repo root is on sys.path (see main).

    save_vocab(folder / "tokenizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--text-layers", type=int, default=12, help="CLIP layers (SD-1.5: 12)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parents[1]))  # For the tokenizer files the tests know how to make.

    from pyoco_jax.config import load_config
    from pyoco_jax.data.video_io import write_mp4
    from pyoco_jax.prepare import prepare

    root = Path(tempfile.mkdtemp())
    _pipeline(root / "sd", args.text_layers)
    videos = root / "videos"
    videos.mkdir()
    rows = ["path,caption"]
    rng = np.random.default_rng(0)
    for i in range(args.clips):
        frames = rng.integers(0, 255, (args.frames * 2, args.side, args.side, 3), dtype=np.uint8)
        write_mp4(videos / f"clip{i}.mp4", frames, 8.0)
        rows.append(f"clip{i}.mp4,a clip number {i}")
    (videos / "metadata.csv").write_text("\n".join(rows) + "\n")
    overrides = [
        f"vae.path={root / 'sd'}",
        f"text.path={root / 'sd'}",
        f"data.num_frames={args.frames}",
        f"data.resolution={args.side // 8}",
        "prepare.frame_strides=()",  # One clip per video, at the native rate.
    ]
    config = load_config("configs/sd15_latent.py", overrides)
    first = prepare(config, str(videos), root / "warm", num_shards=1, batch_size=1)  # Includes compilation.
    begin = time.perf_counter()
    report = prepare(config, str(videos), root / "timed", num_shards=1, batch_size=1)
    seconds = time.perf_counter() - begin
    print(
        f"{args.clips} clips of {args.frames}x{args.side}x{args.side}: first call {first.seconds:.1f} s "
        f"(with compilation), then {seconds / report.examples:.2f} s per clip"
    )


if __name__ == "__main__":
    main()
