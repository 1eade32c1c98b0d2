"""The parts of a diffusers `WanPipeline` folder besides the transformer, written for a Wan DiT run's export.

A DiT run whose `vae.path` is a Wan VAE and whose `text.path` a UMT5 encoder (`convert.families`; either a
diffusers Wan folder or its pyoco-convert output) exports as a whole pipeline (`convert.export`):

    OUT/model_index.json                  WanPipeline and its components
    OUT/transformer/                      the trained WanTransformer3DModel (`convert.wan_transformer`)
    OUT/vae/                              AutoencoderKLWan: vae.path's weights under diffusers' names again
    OUT/text_encoder/                     UMT5EncoderModel: text.path's config.json and weights
    OUT/tokenizer/                        text.path's tokenizer files, as they are
    OUT/scheduler/scheduler_config.json   UniPCMultistepScheduler with flow sigmas, the run's shift and order

so `WanPipeline.from_pretrained(OUT)` loads it. The VAE and text encoder keep the dtype of the files they come
from. The scheduler is Wan's sampler, which is how pyoco-sample samples with sample.sampler=unipc and
diffusion.flow.grid=unipc (configs/wan21_*.py); another sampler is logged as differing from it.
"""

import json
import shutil
from pathlib import Path

import ml_collections
from absl import logging
from safetensors.numpy import save_file

from pyoco_jax.convert.clip import CONFIG_NAME, WEIGHTS_NAME, model_folder
from pyoco_jax.convert.converted import SCHEDULER_CONFIG, TOKENIZER
from pyoco_jax.convert.families import MODEL_INDEX, WAN, WAN_PIPELINE, text_family, vae_family
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.convert.umt5 import SUBFOLDER as TEXT_SUBFOLDER
from pyoco_jax.convert.umt5 import TOKENIZER_NAME, load_umt5_params, transformers_state_dict
from pyoco_jax.convert.wan_vae import SUBFOLDER as VAE_SUBFOLDER
from pyoco_jax.convert.wan_vae import load_wan_vae_params, save_wan_vae
from pyoco_jax.diffusion.flow import FlowMatching
from pyoco_jax.errors import ConfigError

DEFAULT_TOKENIZER_CLASS = "T5TokenizerFast"  # What Wan 2.1's published model_index.json names.


def exports_wan_pipeline(config: ml_collections.ConfigDict) -> bool:
    """Whether a run exports as a whole WanPipeline: a DiT with a Wan VAE and a UMT5 text encoder configured."""
    if config.model.backbone != "dit" or not (config.vae.path and config.text.path):
        return False
    for key, path in (("vae.path", config.vae.path), ("text.path", config.text.path)):
        if not Path(path).exists():
            raise ConfigError(f"config key {key!r}: {path} does not exist; give the run's with --config.{key}=DIR")
    return vae_family(config.vae.path) == WAN and text_family(config.text.path) == WAN


def scheduler_config(config: ml_collections.ConfigDict) -> dict:
    """diffusers' UniPCMultistepScheduler config for sampling as the run's flow UniPC sampler does."""
    flow = config.diffusion.flow
    if config.sample.sampler != "unipc" or flow.grid != "unipc" or flow.timestep_rounding != "floor":
        logging.warning(
            "the exported pipeline samples with Wan's UniPC (flow sigmas, whole-number model timesteps); this run "
            "samples with sample.sampler=%r on diffusion.flow.grid=%r, diffusion.flow.timestep_rounding=%r",
            config.sample.sampler,
            flow.grid,
            flow.timestep_rounding,
        )
    return {
        "_class_name": "UniPCMultistepScheduler",
        "num_train_timesteps": int(flow.num_train_timesteps),
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": FlowMatching(shift=flow.shift, sample_shift=flow.sample_shift).sampling_shift,
        "solver_order": int(config.sample.unipc_order),
    }


def _tokenizer_class(folder: Path) -> str:
    settings = folder / "tokenizer_config.json"
    named = json.loads(settings.read_text()).get("tokenizer_class") if settings.is_file() else None
    return named or DEFAULT_TOKENIZER_CLASS


def write_pipeline_parts(config: ml_collections.ConfigDict, out: Path) -> list[Path]:
    """Writes everything of the WanPipeline folder `out` but its transformer/ (`wan_transformer.SUBFOLDER`, the
    caller's: module doc); returns the files."""
    vae_config, vae = load_wan_vae_params(config.vae.path)
    files = save_wan_vae(vae_config, vae, out / VAE_SUBFOLDER)
    text = out / TEXT_SUBFOLDER
    text.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_folder(config.text.path, TEXT_SUBFOLDER, (CONFIG_NAME,)) / CONFIG_NAME, text / CONFIG_NAME)
    save_file(transformers_state_dict(load_umt5_params(config.text.path)[1]), text / WEIGHTS_NAME, {"format": "pt"})
    tokenizer = model_folder(config.text.path, TOKENIZER, (TOKENIZER_NAME,))
    if not (tokenizer / TOKENIZER_NAME).is_file():
        raise ConversionError(f"text.path={config.text.path} has no {TOKENIZER}/{TOKENIZER_NAME} to export with it")
    shutil.copytree(tokenizer, out / TOKENIZER, dirs_exist_ok=True)
    (out / SCHEDULER_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (out / SCHEDULER_CONFIG).write_text(json.dumps(scheduler_config(config), indent=2) + "\n")
    index = {
        "_class_name": WAN_PIPELINE,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", _tokenizer_class(tokenizer)],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (out / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, text / CONFIG_NAME, text / WEIGHTS_NAME, out / SCHEDULER_CONFIG, out / MODEL_INDEX]
