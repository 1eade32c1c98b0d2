"""Our video U-Net params -> files other tools read: diffusers safetensors, or params-only Orbax.

A safetensors export is a diffusers `UNet2DConditionModel` folder plus two files of our own:

    OUT/config.json                           diffusers config of the 2D (image) architecture
    OUT/diffusion_pytorch_model.safetensors   2D tensors, diffusers names and (O, I, kh, kw) layouts
    OUT/video.safetensors                     layers an image U-Net lacks, under our dotted names:
                                              temporal_attentions.*, temporal_convs.*, *.adaptor.*,
                                              fps_embedding.*, and class_embedding.null (the row of
                                              the dropped label used by classifier-free guidance)
    OUT/pyoco_config.json                     the full experiment config

so `UNet2DConditionModel.from_pretrained(OUT)` loads the image part in PyTorch and `load_exported(OUT)`
loads the whole video model here. An Orbax export is `OUT/params` (params only, for inference) beside
the same `pyoco_config.json`.

A DiT run (model.backbone=dit) exports as a diffusers `WanTransformer3DModel` folder (config.json and
safetensors, `convert.wan_transformer.save_wan_transformer`) beside `pyoco_config.json`, loadable by
`WanTransformer3DModel.from_pretrained(OUT)` as it is; with a Wan VAE (`vae.path`) and UMT5 encoder
(`text.path`) it exports as a whole `WanPipeline` folder instead, the transformer in OUT/transformer/
(`convert.wan_pipeline_export`), loadable by `WanPipeline.from_pretrained(OUT)`. A DiT trained without text
(model.cross_attention_dim 0) has text_dim 1 and is given one zero token, `encoder_hidden_states` of shape
(B, 1, 1). A DiT with a class embedding has no diffusers equivalent: its safetensors export is refused, its
Orbax export holds everything.

A LoRA run (model.lora.rank > 0) exports its adapters merged into the weights (W + alpha/rank A B), with
`pyoco_config.json` saying rank 0; a DiT's safetensors export also writes the adapters alone as
`pytorch_lora_weights.safetensors`, which diffusers' `WanPipeline.load_lora_weights(OUT)` loads onto the
base model.
"""

import json
import re
from pathlib import Path

import ml_collections
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from safetensors.numpy import save_file

from pyoco_jax.config import validate
from pyoco_jax.convert.clip import filled_model
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME, convert_state_dict
from pyoco_jax.convert.diffusers_names import RENAMES as DIFFUSERS_RENAMES
from pyoco_jax.convert.merge import CLASS_TABLE, NEW_PARAM_PATTERN, ConversionError
from pyoco_jax.convert.wan_pipeline_export import exports_wan_pipeline, write_pipeline_parts
from pyoco_jax.convert.wan_transformer import SUBFOLDER as WAN_SUBFOLDER
from pyoco_jax.convert.wan_transformer import read_wan_params, save_wan_lora, save_wan_transformer
from pyoco_jax.convert.weight_files import read_safetensors
from pyoco_jax.models.lora import lora_spec, merge_lora_params
from pyoco_jax.train.build import Backbone, build_model

VIDEO_WEIGHTS_NAME = "video.safetensors"
EXPERIMENT_CONFIG_NAME = "pyoco_config.json"
ORBAX_PARAMS_NAME = "params"
NULL_CLASS_ROW = "class_embedding.null"
FORMATS = ("safetensors", "orbax")
INERT_CROSS_ATTENTION = re.compile(r"^(.*transformer_blocks\.\d+)\.(attn2|norm2)\.")

# Our module names -> diffusers': the renames applied on import, inverted.
_RENAMES = tuple((ours, theirs) for theirs, ours in DIFFUSERS_RENAMES)


def diffusers_config(model_config: ml_collections.ConfigDict) -> dict:
    """The `config.json` of a diffusers UNet2DConditionModel with our 2D architecture.

    diffusers' transformer blocks always cross-attend; a model without text conditioning is
    exported with inert cross-attention of width 1 (see `_inert_cross_attention`).
    """
    attention = list(model_config.attention_levels)

    def per_level(value):
        return list(value) if isinstance(value, (tuple, list)) else value

    return {
        "_class_name": "UNet2DConditionModel",
        "in_channels": model_config.in_channels,
        "out_channels": model_config.out_channels,
        "block_out_channels": list(model_config.block_out_channels),
        "layers_per_block": model_config.layers_per_block,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if model_config.mid_block_attention else "UNetMidBlock2D",
        "attention_head_dim": per_level(model_config.num_attention_heads),  # diffusers' name for the head count
        "transformer_layers_per_block": per_level(model_config.transformer_layers_per_block),
        "cross_attention_dim": model_config.cross_attention_dim or 1,
        "use_linear_projection": model_config.use_linear_projection,
        "norm_num_groups": model_config.norm_num_groups,
        "norm_eps": model_config.norm_eps,
        "num_class_embeds": model_config.num_classes or None,
        "flip_sin_to_cos": model_config.flip_sin_to_cos,
        "freq_shift": model_config.freq_shift,
    }


def _inert_cross_attention(image: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cross-attention tensors that add exactly zero, for blocks of a model without text conditioning.

    With zero projections the attention output is 0, so diffusers' `hidden + attn2(norm2(hidden), ctx)`
    equals our block for any `encoder_hidden_states` of shape (B, T, 1).
    """
    inert = {}
    for name, value in image.items():
        if not name.endswith(".attn1.to_q.weight"):
            continue
        prefix, width = name.removesuffix(".attn1.to_q.weight"), value.shape[0]
        inert[f"{prefix}.norm2.weight"] = np.ones((width,), value.dtype)
        inert[f"{prefix}.norm2.bias"] = np.zeros((width,), value.dtype)
        for projection, fan_in in (("to_q", width), ("to_k", 1), ("to_v", 1), ("to_out.0", width)):
            inert[f"{prefix}.attn2.{projection}.weight"] = np.zeros((width, fan_in), value.dtype)
        inert[f"{prefix}.attn2.to_out.0.bias"] = np.zeros((width,), value.dtype)
    return inert


def _diffusers_tensor(name: str, value: np.ndarray, linear_projection: bool) -> tuple[str, np.ndarray]:
    module, leaf = name.rsplit(".", 1)
    theirs = f".{module}."
    for ours, diffusers in _RENAMES:
        theirs = theirs.replace(ours, diffusers)
    module = theirs.strip(".")
    if leaf == "bias":
        return f"{module}.bias", value
    if leaf == "scale":
        return f"{module}.weight", value
    if leaf != "kernel":
        raise ConversionError(f"no diffusers equivalent for parameter {name!r}")
    if value.ndim == 4:
        return f"{module}.weight", value.transpose(3, 2, 0, 1)
    if module.rsplit(".", 1)[-1] in ("proj_in", "proj_out") and "transformer_blocks" not in module:
        if not linear_projection:  # SD 1.x: pointwise convs (O, I, 1, 1).
            return f"{module}.weight", value.T[:, :, None, None]
    return f"{module}.weight", value.T


def _contiguous(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def split_for_diffusers(
    params: dict[str, np.ndarray], model_config: ml_collections.ConfigDict
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(2D tensors by diffusers names and layouts, video-only tensors by our names)."""
    image, video = {}, {}
    for name, value in params.items():
        if name == CLASS_TABLE:
            image["class_embedding.weight"] = value[:-1]
            video[NULL_CLASS_ROW] = value[-1:]
        elif NEW_PARAM_PATTERN.search(name):
            video[name] = value
        else:
            key, tensor = _diffusers_tensor(name, value, model_config.use_linear_projection)
            image[key] = tensor
    if model_config.cross_attention_dim == 0:
        image.update(_inert_cross_attention(image))
    return _contiguous(image), _contiguous(video)


def _cast(params: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    target = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    return {k: np.asarray(v).astype(target) for k, v in params.items()}


def without_lora(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with `model.lora.rank` = 0: the config of a LoRA run's merged weights."""
    plain = ml_collections.ConfigDict(config.to_dict())
    plain.model.lora.rank = 0
    return plain


def _write_config(config: ml_collections.ConfigDict, out: Path) -> None:
    (out / EXPERIMENT_CONFIG_NAME).write_text(json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True))


def export(
    params: dict[str, np.ndarray], config: ml_collections.ConfigDict, out: str | Path, *, fmt: str, dtype: str
) -> list[Path]:
    """Writes `params` (dotted name -> array) in `fmt` to the folder `out`; returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    out = Path(out)
    spec = lora_spec(config.model)
    adapters = params
    if spec is not None:  # Exported merged, as the plain model the adapters make.
        params, config = merge_lora_params(params, spec.scale), without_lora(config)
    if fmt == "safetensors" and config.model.backbone == "dit":
        model = filled_model(lambda: build_model(config, 0), params, "the DiT to export")
        pipeline = exports_wan_pipeline(config)
        save_wan_transformer(model, out / WAN_SUBFOLDER if pipeline else out, dtype=dtype)  # Refuses a class table.
        if pipeline:
            write_pipeline_parts(config, out)
        if spec is not None:
            save_wan_lora(adapters, spec.scale, out, dtype=dtype)
        _write_config(config, out)
        return sorted(p for p in out.rglob("*") if p.is_file())
    out.mkdir(parents=True, exist_ok=True)
    params = _cast(params, dtype)
    metadata = {"format": "pt", "dtype": dtype}
    if fmt == "safetensors":
        image, video = split_for_diffusers(params, config.model)
        (out / CONFIG_NAME).write_text(json.dumps(diffusers_config(config.model), indent=2))
        save_file(image, out / WEIGHTS_NAME, metadata=metadata)
        save_file(video, out / VIDEO_WEIGHTS_NAME, metadata={**metadata, "names": "pyoco_jax dotted parameter names"})
    else:
        target = epath.Path(out) / ORBAX_PARAMS_NAME
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(target, params, force=True)
    _write_config(config, out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def read_experiment_config(path: str | Path) -> ml_collections.ConfigDict:
    file = Path(path) / EXPERIMENT_CONFIG_NAME
    if not file.exists():
        raise ConversionError(f"{path} is not a pyoco-export folder (no {EXPERIMENT_CONFIG_NAME})")
    return validate(ml_collections.ConfigDict(json.loads(file.read_text())))


def _exported_params(path: Path, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Every parameter of an export folder by our dotted names."""
    if (path / ORBAX_PARAMS_NAME).exists():
        with ocp.StandardCheckpointer() as checkpointer:
            return {k: np.asarray(v) for k, v in checkpointer.restore(epath.Path(path) / ORBAX_PARAMS_NAME).items()}
    if config.model.backbone == "dit":
        return read_wan_params(path)[1]
    image = read_safetensors(path / WEIGHTS_NAME)
    if config.model.cross_attention_dim == 0:
        image = {k: v for k, v in image.items() if not INERT_CROSS_ATTENTION.match(k)}
    params = convert_state_dict(image)
    video = read_safetensors(path / VIDEO_WEIGHTS_NAME)
    null_row = video.pop(NULL_CLASS_ROW, None)
    if null_row is not None:
        params[CLASS_TABLE] = np.concatenate([params[CLASS_TABLE], null_row.astype(params[CLASS_TABLE].dtype)])
    return {**params, **video}


def load_exported(path: str | Path) -> tuple[Backbone, ml_collections.ConfigDict]:
    """The video model of a `pyoco-export` folder (either format, either backbone) and its experiment config."""
    path = Path(path)
    config = read_experiment_config(path)
    return filled_model(lambda: build_model(config, 0), _exported_params(path, config), f"the export {path}"), config
