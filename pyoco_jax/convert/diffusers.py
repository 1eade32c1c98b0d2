"""diffusers `UNet2DConditionModel` folders -> VideoUNet, without importing torch.

`load_unet(path, config)` reads `config.json` and the safetensors weights, builds the matching
2D architecture (`model_config_from_diffusers`), adds the temporal layers the experiment config
asks for (freshly initialised, identity at init) and puts every pretrained tensor in place,
failing on any shape mismatch, unused tensor or missing 2D parameter.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from pyoco_jax.configs import default
from pyoco_jax.convert.cache import cache_key, cached
from pyoco_jax.convert.converted import converted_root, read_component
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME, convert_state_dict
from pyoco_jax.convert.merge import CLASS_TABLE, ConversionError, LoadReport, flat_params, merge_params, path_name
from pyoco_jax.convert.vae import load_vae as load_vae  # Re-exported next to load_unet.
from pyoco_jax.convert.weight_files import read_weight_files, weight_files
from pyoco_jax.models.unet import VideoUNet

# diffusers options outside the SD 1.x/2.x family, with the only values supported.
_FIXED = {
    "act_fn": "silu",
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "class_embed_type": None,
    "addition_embed_type": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None,
    "timestep_post_act": None,
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "downsample_padding": 1,
    "center_input_sample": False,
    "dual_cross_attention": False,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "mid_block_scale_factor": 1,
    "cross_attention_norm": None,
    "projection_class_embeddings_input_dim": None,
    "reverse_transformer_layers_per_block": None,
}
# diffusers' defaults for architecture keys a config.json may leave out.
_DEFAULTS = {
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "attention_head_dim": 8,
    "num_attention_heads": None,
    "transformer_layers_per_block": 1,
    "cross_attention_dim": 1280,
    "use_linear_projection": False,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "num_class_embeds": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
}
_DOWN = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
_MID = {"UNetMidBlock2DCrossAttn": True, "UNetMidBlock2D": False}
# Architecture keys of our `model` section that a diffusers config determines.
_ARCHITECTURE = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "attention_levels",
    "mid_block_attention",
    "num_attention_heads",
    "transformer_layers_per_block",
    "cross_attention_dim",
    "use_linear_projection",
    "norm_num_groups",
    "norm_eps",
    "flip_sin_to_cos",
    "freq_shift",
)
_NO_TEMPORAL = {"levels": (), "mid": False, "attention": False, "conv": False, "adaptor": False}


def _uniform(value: Any, key: str) -> Any:
    """A per-level list whose entries are all equal -> that entry (else unsupported)."""
    if isinstance(value, (list, tuple)):
        if len(set(map(str, value))) != 1:
            raise ConversionError(f"diffusers config {key}={value}: different values per level are not supported")
        return value[0]
    return value


def model_config_from_diffusers(
    json_dict: dict, base: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """Our `model` config section for a diffusers UNet2DConditionModel `config.json`.

    Architecture keys come from `json_dict`; everything else (dtypes, remat, attention
    backend, temporal layers, fps conditioning, and num_classes when the checkpoint has no
    class table) comes from `base` (default: configs/default.py's `model`).
    """
    d = {**_DEFAULTS, **json_dict}
    for key, supported in _FIXED.items():
        value = d.get(key, supported)
        if value != supported:
            raise ConversionError(f"diffusers config {key}={value!r} is not supported (only {supported!r})")
    only_cross = d["only_cross_attention"]
    only_cross = any(only_cross) if isinstance(only_cross, (list, tuple)) else bool(only_cross)
    if only_cross or d["mid_block_only_cross_attention"]:
        raise ConversionError("diffusers config only_cross_attention=True is not supported")
    down, up = list(d["down_block_types"]), list(d["up_block_types"])
    for kind in down + up:
        if kind not in {**_DOWN, **_UP}:
            raise ConversionError(f"diffusers block type {kind!r} is not supported (only {list(_DOWN) + list(_UP)})")
    attention = [_DOWN.get(k, False) for k in down]
    if [_UP.get(k, False) for k in reversed(up)] != attention or any(k not in _DOWN for k in down):
        raise ConversionError(f"up_block_types {up} must mirror down_block_types {down}")
    if d["mid_block_type"] not in _MID:
        raise ConversionError(f"diffusers mid_block_type={d['mid_block_type']!r} is not supported (only {list(_MID)})")
    levels = len(d["block_out_channels"])
    heads = d["num_attention_heads"] or d["attention_head_dim"]  # diffusers' naming: this is the head count
    depth = d["transformer_layers_per_block"]
    if isinstance(depth, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in depth):
        raise ConversionError("per-block transformer_layers_per_block (nested lists) is not supported")
    if len(down) != levels:
        raise ConversionError(f"{len(down)} down blocks but {levels} block_out_channels")
    architecture = {
        "in_channels": int(d["in_channels"]),
        "out_channels": int(d["out_channels"]),
        "block_out_channels": tuple(int(c) for c in d["block_out_channels"]),
        "layers_per_block": int(_uniform(d["layers_per_block"], "layers_per_block")),
        "attention_levels": tuple(attention),
        "mid_block_attention": _MID[d["mid_block_type"]],
        "num_attention_heads": tuple(int(h) for h in heads) if isinstance(heads, (list, tuple)) else int(heads),
        "transformer_layers_per_block": tuple(int(v) for v in depth)
        if isinstance(depth, (list, tuple))
        else int(depth),
        "cross_attention_dim": int(_uniform(d["cross_attention_dim"], "cross_attention_dim") or 0),
        "use_linear_projection": bool(d["use_linear_projection"]),
        "norm_num_groups": int(d["norm_num_groups"]),
        "norm_eps": float(d["norm_eps"]),
        "flip_sin_to_cos": bool(d["flip_sin_to_cos"]),
        "freq_shift": int(d["freq_shift"]),
    }
    if d["num_class_embeds"]:
        architecture["num_classes"] = int(d["num_class_embeds"])
    base = base if base is not None else default.get_config().model
    # A new ConfigDict rather than assignment: per-level tuples may replace the base's ints.
    return ml_collections.ConfigDict({**base.to_dict(), **architecture})


def _read_unet_folder(path: str | Path) -> tuple[Path, dict, list[Path]]:
    folder = Path(path)
    if (folder / "unet" / CONFIG_NAME).exists() and not (folder / CONFIG_NAME).exists():
        folder = folder / "unet"  # A whole pipeline folder: take its U-Net.
    if not (folder / CONFIG_NAME).exists():
        raise ConversionError(f"{folder} is not a diffusers UNet2DConditionModel folder (no {CONFIG_NAME})")
    json_dict = json.loads((folder / CONFIG_NAME).read_text())
    kind = json_dict.get("_class_name", "UNet2DConditionModel")
    if kind != "UNet2DConditionModel":
        raise ConversionError(f"{folder} holds a {kind}, not a UNet2DConditionModel")
    return folder, json_dict, [] if converted_root(folder) else weight_files(folder, WEIGHTS_NAME)


def _converted(
    folder: Path, files: list[Path], json_dict: dict, cache_dir: str | Path | None
) -> tuple[dict[str, np.ndarray], bool]:
    if converted_root(folder):  # A pyoco-convert output: already our names, no conversion to cache.
        return read_component(folder, "unet"), True
    return cached(cache_dir, cache_key(files, json_dict), lambda: convert_state_dict(read_weight_files(files)))


def load_unet_params(path: str | Path, *, cache_dir: str | Path | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, converted tensors by our dotted names) of a diffusers U-Net folder.

    For callers that build (and shard) the video model themselves, then `merge_params` these in.
    """
    folder, json_dict, files = _read_unet_folder(path)
    return json_dict, _converted(folder, files, json_dict, cache_dir)[0]


def _init_unloaded(build: Callable[[], VideoUNet], state: nnx.State, params: dict[str, np.ndarray]) -> nnx.State:
    """Materialises only the parameters `params` does not provide (temporal layers, null label row).

    The constructor runs under jit and returns just those, so XLA drops the initialisers of
    everything that is about to be overwritten: no compile or memory spent on discarded weights.
    """
    wanted = {name for name in flat_params(state) if name not in params or name.endswith(CLASS_TABLE)}
    fresh = jax.jit(lambda: {k: v.get_value() for k, v in flat_params(build()).items() if k in wanted})()
    return nnx.from_flat_state(
        [(p, v.replace(fresh[path_name(p)]) if path_name(p) in fresh else v) for p, v in nnx.to_flat_state(state)]
    )


def load_unet_with_report(
    path: str | Path,
    config: ml_collections.ConfigDict | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> tuple[VideoUNet, LoadReport]:
    """`load_unet`, also returning which parameters were loaded and which are new."""
    folder, json_dict, files = _read_unet_folder(path)
    if config is None:
        model_config = model_config_from_diffusers(json_dict)
        with model_config.unlocked():
            model_config.temporal.update(_NO_TEMPORAL)
            model_config.fps_conditioning = False
            model_config.num_classes = int(json_dict.get("num_class_embeds") or 0)
        num_frames, seed = 1, 0
    else:
        model_config = model_config_from_diffusers(json_dict, base=config.model)
        changed = [k for k in _ARCHITECTURE if str(config.model.get(k)) != str(model_config.get(k))]
        if changed:
            logging.warning(
                "the checkpoint %s sets model.%s (the experiment config's values are replaced)",
                folder,
                ", model.".join(f"{k}={model_config[k]}" for k in changed),
            )
        num_frames, seed = int(config.data.num_frames), int(config.seed)

    params, hit = _converted(folder, files, json_dict, cache_dir)
    build = lambda: VideoUNet(model_config, num_frames=num_frames, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(nnx.eval_shape(build))
    merged, report = merge_params(_init_unloaded(build, state, params), params)
    model = nnx.merge(graphdef, merged)
    report.from_cache = hit
    logging.info("loaded %s%s: %s", folder, " (from cache)" if hit else "", report.summary())
    return model, report


def load_unet(
    path: str | Path, config: ml_collections.ConfigDict | None = None, *, cache_dir: str | Path | None = None
) -> VideoUNet:
    """A VideoUNet with a diffusers UNet2DConditionModel's weights and fresh temporal layers.

    `path`: the U-Net folder (config.json + diffusion_pytorch_model.safetensors) or a pipeline
    folder with a `unet/` subfolder. `config`: the full experiment config; its `model` section
    gives the temporal layers, dtypes, remat and backend, `data.num_frames` the clip length and
    `seed` the temporal layers' init. `config=None` gives the plain image model: no temporal
    layers, no fps conditioning, 1 frame. `cache_dir`: keep converted weights there (Orbax) so
    a large checkpoint converts once.
    """
    return load_unet_with_report(path, config, cache_dir=cache_dir)[0]
