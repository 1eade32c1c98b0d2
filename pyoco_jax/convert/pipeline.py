"""A whole Stable Diffusion pipeline folder -> one Orbax checkpoint of the video model, VAE and text encoder.

`pyoco-convert` reads unet/, vae/, text_encoder/ and tokenizer/ once, inflates the U-Net to the
experiment config's video model (temporal layers new), and writes

    OUT/params/                 one Orbax checkpoint with items unet, vae and text_encoder (our names)
    OUT/unet|vae|text_encoder/config.json, OUT/tokenizer/*   the original configs and tokenizer files
    OUT/scheduler/scheduler_config.json   how the U-Net was trained (prediction type, schedule), if the source says
    OUT/pyoco_pipeline.json     the experiment config and what was loaded or new, per component

so OUT can stand wherever a pipeline folder is accepted (`train.init_from`, `vae.path`, `text.path`)
and later runs skip reading and converting the PyTorch files.
"""

import json
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx

from pyoco_jax.convert.clip import load_text_encoder
from pyoco_jax.convert.converted import COMPONENTS, MARKER, PARAMS
from pyoco_jax.convert.diffusers import load_unet_with_report
from pyoco_jax.convert.merge import ConversionError, LoadReport, flat_params
from pyoco_jax.convert.vae import load_vae_params

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"


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


def _summary(report: LoadReport | None, params: dict[str, np.ndarray]) -> dict:
    count = sum(int(v.size) for v in params.values())
    if report is None:
        return {"tensors": len(params), "params": count, "loaded": count, "new": 0, "new_tensors": []}
    return {
        "tensors": len(params),
        "params": count,
        "loaded": report.loaded_count,
        "new": report.new_count,
        "new_tensors": report.new,
    }


def convert_pipeline(source: str | Path, config: ml_collections.ConfigDict, out: str | Path) -> dict:
    """Converts the diffusers pipeline folder `source` for `config`'s video model into `out`; returns the summary."""
    source, out = Path(source), Path(out)
    missing = [part for part in (*COMPONENTS, "tokenizer") if not (source / part).is_dir()]
    if missing:
        raise ConversionError(f"{source} is not a whole Stable Diffusion pipeline folder: no {', '.join(missing)}/")
    unet, unet_report = load_unet_with_report(source / "unet", config)
    _, vae = load_vae_params(source / "vae")
    params = {"unet": _numpy(unet), "vae": vae, "text_encoder": _numpy(load_text_encoder(source / "text_encoder"))}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        args = ocp.args.Composite(**{name: ocp.args.StandardSave(value) for name, value in params.items()})
        checkpointer.save(epath.Path(out).resolve() / PARAMS, args)
    for part in COMPONENTS:
        (out / part).mkdir()
        shutil.copy(source / part / "config.json", out / part / "config.json")
    shutil.copytree(source / "tokenizer", out / "tokenizer")
    if (source / SCHEDULER_CONFIG).is_file():
        (out / SCHEDULER_CONFIG).parent.mkdir()
        shutil.copy(source / SCHEDULER_CONFIG, out / SCHEDULER_CONFIG)
    summary = {
        "unet": _summary(unet_report, params["unet"]),
        "vae": _summary(None, params["vae"]),
        "text_encoder": _summary(None, params["text_encoder"]),
    }
    marker = {"version": 1, "source": str(source), "config": json.loads(config.to_json()), "summary": summary}
    (out / MARKER).write_text(json.dumps(marker, indent=2))
    logging.info("converted %s -> %s: %s", source, out, json.dumps(summary))
    return summary
