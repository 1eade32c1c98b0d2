"""A whole diffusers pipeline folder -> one Orbax checkpoint of its denoiser, VAE and text encoder (`pyoco-convert`).

A Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/) has its U-Net inflated to the experiment
config's video model (temporal layers new); a Wan 2.1 folder goes to `convert.wan_pipeline` (which kind it is,
`convert.families.pipeline_family` decides). The output (`convert.converted` shows its files) keeps the
original configs and tokenizer files, so it can stand wherever a pipeline folder is accepted
(`train.init_from`, `vae.path`, `text.path`) and later runs skip reading and converting the PyTorch files.
"""

import json
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.convert.clip import load_text_encoder
from pyoco_jax.convert.converted import SCHEDULER_CONFIG, check_whole_pipeline, summary_counts, write_converted
from pyoco_jax.convert.diffusers import load_unet_with_report
from pyoco_jax.convert.families import WAN, pipeline_family
from pyoco_jax.convert.merge import flat_params
from pyoco_jax.convert.vae import load_vae_params
from pyoco_jax.convert.wan_pipeline import convert_wan_pipeline

COMPONENTS = ("unet", "vae", "text_encoder")


def scheduler_config(folder: str | Path) -> dict | None:
    """The diffusers scheduler config of the pipeline holding `folder` (itself or its parent, e.g. PIPE/unet).

    It says how the U-Net was trained (prediction_type, beta schedule), which EDM fine-tuning must know.
    """
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        if (candidate / SCHEDULER_CONFIG).is_file():
            return json.loads((candidate / SCHEDULER_CONFIG).read_text())
    return None


def _numpy(module_or_params) -> dict[str, np.ndarray]:
    if isinstance(module_or_params, nnx.Module):
        return {k: np.asarray(v.get_value()) for k, v in flat_params(module_or_params).items()}
    return {k: np.asarray(v) for k, v in module_or_params.items()}


def convert_pipeline(source: str | Path, config: ml_collections.ConfigDict, out: str | Path) -> dict:
    """Converts the diffusers pipeline folder `source` for `config`'s video model into `out`; returns the summary
    (component -> tensor and parameter counts, loaded and new)."""
    source, out = Path(source), Path(out)
    if pipeline_family(source) == WAN:
        return convert_wan_pipeline(source, config, out)
    check_whole_pipeline(source, COMPONENTS, "Stable Diffusion")
    unet, unet_report = load_unet_with_report(source / "unet", config)
    _, vae = load_vae_params(source / "vae")
    params = {"unet": _numpy(unet), "vae": vae, "text_encoder": _numpy(load_text_encoder(source / "text_encoder"))}
    summary = {
        "unet": summary_counts(unet_report, params["unet"]),
        "vae": summary_counts(None, params["vae"]),
        "text_encoder": summary_counts(None, params["text_encoder"]),
    }
    write_converted(source, out, params, summary, config)
    return summary
