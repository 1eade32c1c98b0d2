"""What makes a config's values possible: ranges, choices, and how options must agree with each other.

Each rule names the key to change. `pyoco_jax.config.validate` runs them all before anything is built,
so a mistake costs a second, not a compile.
"""

import math
import re

import ml_collections

from pyoco_jax import parallel
from pyoco_jax.conditioning import FRAME_MODES, condition_channels
from pyoco_jax.configs import default
from pyoco_jax.data.buckets import parse_buckets
from pyoco_jax.data.clip_sampling import CROPS, TEMPORAL_SAMPLINGS
from pyoco_jax.data.loader import SOURCES
from pyoco_jax.data.synthetic import BACKGROUNDS, check_shape_size
from pyoco_jax.data.video_sources import UCF101_SPLITS
from pyoco_jax.diffusion import FLOW_GRIDS, FORMULATIONS, LOSS_WEIGHTINGS, PREDICTIONS, SAMPLERS, TIME_SAMPLINGS
from pyoco_jax.diffusion import check_config as check_diffusion
from pyoco_jax.diffusion.flow import TIMESTEP_ROUNDINGS
from pyoco_jax.diffusion.schedules import DDPM_SCHEDULES
from pyoco_jax.errors import ConfigError, UserError
from pyoco_jax.evaluate.fvd_protocol import get_protocol
from pyoco_jax.evaluate.run_eval import METRICS
from pyoco_jax.models import context_parallel
from pyoco_jax.models.attention import BACKENDS
from pyoco_jax.models.dit import wan_config
from pyoco_jax.models.layers import COMPUTE_DTYPES, PARAM_DTYPES
from pyoco_jax.models.remat import REMAT_MODES
from pyoco_jax.models.temporal import ARRANGEMENTS, POSITION_ENCODINGS
from pyoco_jax.models.vae.video import TRAINABLE_PARTS
from pyoco_jax.noise import PRIORS
from pyoco_jax.train.build import BACKBONES
from pyoco_jax.train.optimizer import SCHEDULES
from pyoco_jax.train.video_vae_step import LOSSES

# Each option with a fixed set of values, and the module that owns the list.
CHOICES = {
    "data.source": SOURCES,
    "data.crop": CROPS,
    "data.temporal_sampling": TEMPORAL_SAMPLINGS,
    "data.ucf101_split": UCF101_SPLITS,
    "data.background": BACKGROUNDS,
    "noise.prior": PRIORS,
    "diffusion.formulation": FORMULATIONS,
    "diffusion.ddpm.schedule": DDPM_SCHEDULES,
    "diffusion.ddpm.prediction": PREDICTIONS,
    "diffusion.flow.time_sampling": TIME_SAMPLINGS,
    "diffusion.flow.loss_weighting": LOSS_WEIGHTINGS,
    "diffusion.flow.grid": FLOW_GRIDS,
    "diffusion.flow.timestep_rounding": TIMESTEP_ROUNDINGS,
    "model.backbone": BACKBONES,
    "model.dtype": COMPUTE_DTYPES,
    "model.param_dtype": PARAM_DTYPES,
    "model.remat": REMAT_MODES,
    "model.attention_backend": BACKENDS,
    "model.temporal.position_encoding": POSITION_ENCODINGS,
    "model.temporal.arrangement": ARRANGEMENTS,
    "optim.schedule": SCHEDULES,
    "sample.sampler": SAMPLERS,
    "vae.dtype": COMPUTE_DTYPES,
    "vae.temporal_position_encoding": POSITION_ENCODINGS,
    "vae.trainable": tuple(TRAINABLE_PARTS),
    "vae.loss": LOSSES,
    "train.eval_metric": METRICS,
    "condition.frames": FRAME_MODES,
}

POSITIVE = (
    "data.num_frames",
    "data.resolution",
    "data.channels",
    "data.num_examples",
    "data.global_batch_size",
    "data.fps",
    "data.frame_stride",
    "data.max_objects",
    "diffusion.edm.sigma_data",
    "diffusion.edm.p_std",
    "diffusion.edm.sigma_min",
    "diffusion.edm.sigma_max",
    "diffusion.edm.rho",
    "diffusion.ddpm.num_train_timesteps",
    "diffusion.ddpm.beta_start",
    "diffusion.ddpm.beta_end",
    "diffusion.flow.logit_std",
    "diffusion.flow.shift",
    "diffusion.flow.timestep_scale",
    "diffusion.flow.num_train_timesteps",
    "model.in_channels",
    "model.out_channels",
    "model.block_out_channels",
    "model.layers_per_block",
    "model.num_attention_heads",
    "model.transformer_layers_per_block",
    "model.norm_num_groups",
    "model.norm_eps",
    "model.temporal.num_heads",
    "model.dit.patch_size",
    "model.dit.num_attention_heads",
    "model.dit.attention_head_dim",
    "model.dit.ffn_dim",
    "model.dit.num_layers",
    "model.dit.freq_dim",
    "model.dit.eps",
    "model.dit.rope_max_seq_len",
    "optim.learning_rate",
    "optim.accum_steps",
    "optim.lr_scale",
    "optim.max_nonfinite_steps",
    "train.num_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_num",
    "sample.num_steps",
    "sample.num_samples",
    "sample.unipc_order",
    "sample.fps",
    "vae.temporal_num_heads",
    "vae.learning_rate",
    "vae.num_steps",
    "vae.log_every",
)
NON_NEGATIVE = (
    "model.condition_channels",
    "condition.low_res_factor",
    "condition.augment_sigma_max",
    "condition.sample_augment_sigma",
    "data.num_classes",
    "data.worker_count",
    "data.prefetch",
    "data.target_fps",
    "data.camera_speed",
    "noise.alpha",
    "diffusion.ddpm.min_snr_gamma",
    "model.cross_attention_dim",
    "model.num_classes",
    "model.freq_shift",
    "model.lora.rank",
    "model.lora.alpha",
    "optim.warmup_steps",
    "optim.weight_decay",
    "optim.grad_clip_norm",
    "train.keep_every",
    "train.sample_every",
    "train.eval_every",
    "sample.guidance_scale",
    "sample.s_churn",
    "sample.s_tmin",
    "sample.s_tmax",
    "sample.s_noise",
    "vae.warmup_steps",
    "vae.weight_decay",
    "vae.temporal_weight",
    "text.skip_last_layers",
)
UNIT_INTERVAL = (  # [0, 1]
    "data.max_failure_fraction",
    "optim.end_learning_rate_factor",
    "optim.label_drop_rate",
    "sample.eta",
)
BELOW_ONE = ("optim.ema_decay", "optim.b1", "optim.b2", "model.lora.dropout")  # [0, 1)
MAY_BE_INFINITE = ("sample.s_tmax",)  # EDM's "churn at every noise level".
REGEXES = ("optim.trainable", "optim.lr_scale_pattern", "model.lora.targets")
# `model` keys both backbones read; the section's other keys are the U-Net's, and `model.dit` holds the DiT's.
SHARED_MODEL_KEYS = (
    "backbone",
    "in_channels",
    "out_channels",
    "cross_attention_dim",
    "num_classes",
    "dtype",
    "param_dtype",
    "remat",
    "attention_backend",
    "lora",
    "dit",
)


def get(config: ml_collections.ConfigDict, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r}: {message}")


def check_values(config: ml_collections.ConfigDict) -> None:
    """Choices, finiteness, signs and regexes, one key at a time."""
    for key, choices in CHOICES.items():
        require(get(config, key) in choices, key, f"{get(config, key)!r} is not one of {choices}")
    _check_finite(config, "")
    for keys, ok, wanted in (
        (POSITIVE, lambda v: v > 0, "> 0"),
        (NON_NEGATIVE, lambda v: v >= 0, ">= 0"),
        (UNIT_INTERVAL, lambda v: 0 <= v <= 1, "in [0, 1]"),
        (BELOW_ONE, lambda v: 0 <= v < 1, "in [0, 1)"),
    ):
        for key in keys:
            value = get(config, key)
            for item in value if isinstance(value, tuple | list) else (value,):
                require(isinstance(item, int | float) and ok(item), key, f"must be {wanted}, got {value!r}")
    for key in REGEXES:
        try:
            re.compile(get(config, key))
        except re.error as err:
            raise ConfigError(f"config key {key!r}: {get(config, key)!r} is not a regular expression ({err})") from None


def _check_finite(config: ml_collections.ConfigDict, prefix: str) -> None:
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, ml_collections.ConfigDict):
            _check_finite(value, name + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            require(value == math.inf and name in MAY_BE_INFINITE, name, f"must be a finite number, got {value}")


def check_combinations(config: ml_collections.ConfigDict) -> None:
    """Options that must agree with each other."""
    data, optim, noise, edm = config.data, config.optim, config.noise, config.diffusion.edm
    require(
        noise.sample_alpha >= 0 or noise.sample_alpha == -1,
        "noise.sample_alpha",
        f"must be >= 0, or -1 for noise.alpha; got {noise.sample_alpha}",
    )
    require(edm.sigma_min < edm.sigma_max, "diffusion.edm.sigma_min", f"must be below sigma_max {edm.sigma_max}")
    sample_shift = config.diffusion.flow.sample_shift
    require(
        sample_shift > 0 or sample_shift == -1,
        "diffusion.flow.sample_shift",
        f"must be > 0, or -1 for diffusion.flow.shift; got {sample_shift}",
    )
    ddpm = config.diffusion.ddpm
    require(ddpm.beta_start < ddpm.beta_end, "diffusion.ddpm.beta_start", f"must be below beta_end {ddpm.beta_end}")
    require(config.sample.s_tmin <= config.sample.s_tmax, "sample.s_tmin", "must be <= sample.s_tmax")
    try:
        check_shape_size(data.shape_size)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'data.shape_size': {err}") from None
    _check_video_data(data)
    _check_eval(config.train)
    _check_model(config)
    _check_condition(config)
    _check_mesh(config)
    _check_buckets(config)
    require(
        data.global_batch_size % optim.accum_steps == 0,
        "data.global_batch_size",
        f"{data.global_batch_size} is not divisible by optim.accum_steps {optim.accum_steps}",
    )
    try:
        check_diffusion(config)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_eval(train: ml_collections.ConfigDict) -> None:
    try:
        get_protocol(train.eval_protocol)
    except UserError as err:
        raise ConfigError(f"config key 'train.eval_protocol': {err}") from None
    if train.eval_every and train.eval_metric == "clipsim":
        require(bool(train.eval_clip), "train.eval_clip", "name a CLIPModel folder for eval_metric clipsim")


def _check_condition(config: ml_collections.ConfigDict) -> None:
    condition, data = config.condition, config.data
    require(condition.interpolation_factor >= 1, "condition.interpolation_factor", "must be >= 1")
    require(condition.given_frames >= 1, "condition.given_frames", "must be >= 1")
    needed = condition_channels(config)
    require(
        config.model.condition_channels == needed,
        "model.condition_channels",
        f"is {config.model.condition_channels}, but the condition section gives {needed} channels "
        f"(given frames: data.channels + a mask; low-res clip: data.channels); set it to {needed}",
    )
    augments = condition.augment_sigma_max > 0 or condition.sample_augment_sigma > 0
    require(
        augments == bool(config.model.condition_augmentation) or not needed,
        "model.condition_augmentation",
        "must be True exactly when condition.augment_sigma_max or sample_augment_sigma is > 0 (it embeds the level)",
    )
    if condition.frames in ("interpolation", "random"):
        k = condition.interpolation_factor
        require(
            (data.num_frames - 1) % k == 0 and data.num_frames > k,
            "data.num_frames",
            f"interpolation with factor {k} needs (keyframes - 1) * {k} + 1 frames, e.g. {2 * k + 1}",
        )
    if condition.frames in ("first", "last", "random"):
        require(condition.given_frames < data.num_frames, "condition.given_frames", "must be below data.num_frames")
    if condition.low_res_factor > 1:
        factor = condition.low_res_factor
        require(
            data.resolution % factor == 0, "data.resolution", f"must be divisible by condition.low_res_factor {factor}"
        )


def _check_video_data(data: ml_collections.ConfigDict) -> None:
    if data.source in ("video_folder", "tfds", "ucf101"):
        require(data.channels == 3, "data.channels", f"data.source={data.source!r} gives RGB video: use 3")
    if data.source == "tfds":
        require(bool(data.tfds_name), "data.tfds_name", "name the TFDS dataset for data.source='tfds'")
    if data.source == "video_folder":
        require(bool(data.path), "data.path", "set it to the video folder for data.source='video_folder'")


def _check_mesh(config: ml_collections.ConfigDict) -> None:
    """Axis sizes and rules that are wrong whatever the devices (the device count is checked with the mesh)."""
    mesh = config.mesh
    for prefix in ("", parallel.DCN_PREFIX):
        sizes = {prefix + name: mesh[prefix + name] for name in parallel.MESH_AXES}
        for key, size in sizes.items():
            ok = isinstance(size, int) and (size >= 1 or size == -1)
            require(ok, f"mesh.{key}", f"must be >= 1 or -1 (all remaining devices), got {size}")
        free = [key for key, size in sizes.items() if size == -1]
        require(len(free) <= 1, f"mesh.{free[-1] if free else ''}", f"only one of {free} may be -1")
    sequence = mesh.sequence * mesh[parallel.DCN_PREFIX + "sequence"]
    require(sequence >= 1, "mesh.sequence", "cannot be -1: it must divide data.num_frames, so set it explicitly")
    require(
        config.data.num_frames % sequence == 0 or config.model.backbone == "dit",  # The DiT splits tokens.
        "data.num_frames",
        f"{config.data.num_frames} frames cannot be split over mesh.sequence x mesh.dcn_sequence = {sequence} devices",
    )
    parallel.logical_rules(mesh)


def _check_buckets(config: ml_collections.ConfigDict) -> None:
    """Each bucket shape obeys what data.num_frames and data.resolution obey: the model's and the mesh's rules."""
    data, model = config.data, config.model
    try:
        buckets = parse_buckets(data.buckets)
    except ValueError as err:
        raise ConfigError(f"config key 'data.buckets': {err}") from None
    if not buckets:
        return
    require(
        data.source in ("video_folder", "latents"),
        "data.buckets",
        f"buckets apply to data.source 'video_folder' or 'latents', not {data.source!r}; set ()",
    )
    require(not config.train.eval_every, "train.eval_every", "in-loop eval needs clips of one shape; set 0")
    conditioned = config.condition.frames or config.condition.low_res_factor > 1
    require(not conditioned, "data.buckets", "conditioned runs (condition.*) need clips of one shape; set ()")
    sequence = config.mesh.sequence * config.mesh[parallel.DCN_PREFIX + "sequence"]
    for bucket in buckets:
        shape = f"bucket {bucket} (height x width x frames)"
        if model.backbone == "dit":
            frames, height, width = wan_config(model).patch_size
            for size, patch in ((bucket.frames, frames), (bucket.height, height), (bucket.width, width)):
                require(size % patch == 0, "data.buckets", f"{shape}: {size} is not divisible by model.dit.patch_size")
            longest = max(bucket.frames // frames, bucket.height // height, bucket.width // width)
            require(
                longest <= model.dit.rope_max_seq_len,
                "model.dit.rope_max_seq_len",
                f"{model.dit.rope_max_seq_len} positions, but {shape} is {longest} patches long on an axis",
            )
        else:
            factor = 2 ** (len(model.block_out_channels) - 1)
            require(
                bucket.height % factor == 0 and bucket.width % factor == 0,
                "data.buckets",
                f"{shape}: height and width must be divisible by the U-Net's downsampling factor {factor}",
            )
            require(
                bucket.frames <= data.num_frames,
                "data.buckets",
                f"{shape}: more frames than data.num_frames={data.num_frames}, which sizes the U-Net's per-frame "
                "tables; raise data.num_frames",
            )
        require(
            bucket.frames % sequence == 0,
            "data.buckets",
            f"{shape}: {bucket.frames} frames cannot be split over mesh.sequence x mesh.dcn_sequence = {sequence}",
        )


def _per_level(value, levels: int, key: str) -> tuple:
    if isinstance(value, tuple | list):
        require(len(value) == levels, key, f"needs {levels} entries, one per level")
        return tuple(value)
    return (value,) * levels


def _check_model(config: ml_collections.ConfigDict) -> None:
    """The chosen backbone's own rules, none of the other's keys set, and what both need of the data."""
    data, model = config.data, config.model
    defaults = default.get_config().model
    if model.backbone == "dit":
        _check_dit(config)
        unused, owner = {key: model[key] for key in model if key not in SHARED_MODEL_KEYS}, "a U-Net key"
    else:
        _check_unet(config)
        unused, owner = {"dit": model.dit}, "a DiT key"
    changed = _changed(unused, defaults, "model.")
    if changed:
        raise ConfigError(
            f"config key {changed[0]!r}: {owner}, which model.backbone={model.backbone!r} would ignore; "
            "leave it at its default"
        )
    require(
        model.in_channels == data.channels,
        "model.in_channels",
        f"{model.in_channels} differs from data.channels {data.channels}",
    )
    require(
        data.num_classes == 0 or model.num_classes >= data.num_classes,
        "model.num_classes",
        f"the data has {data.num_classes} classes, the model embeds {model.num_classes}",
    )


def _changed(values, defaults, prefix: str) -> list[str]:
    """Dotted keys (under `prefix`) whose value in `values` differs from `defaults`, sections searched through."""
    changed = []
    for key, value in values.items():
        if isinstance(value, ml_collections.ConfigDict):
            changed += _changed(value, defaults[key], f"{prefix}{key}.")
        elif _plain(value) != _plain(defaults[key]):
            changed.append(prefix + key)
    return changed


def _plain(value):
    return tuple(map(_plain, value)) if isinstance(value, tuple | list) else value


def _check_dit(config: ml_collections.ConfigDict) -> None:
    """What the DiT cannot do, each refused on the key that asks for it, and its patches tiling the clip."""
    data, model = config.data, config.model
    require(not model.fps_conditioning, "model.fps_conditioning", "the DiT has no frame-rate embedding; set False")
    require(not config.condition.frames, "condition.frames", "the DiT takes no given frames; set it to ''")
    require(config.condition.low_res_factor <= 1, "condition.low_res_factor", "the DiT takes no low-res clip; set 0")
    try:
        wan = wan_config(model)
    except ValueError as err:
        raise ConfigError(f"config key 'model.dit': {err}") from None
    frames, height, width = wan.patch_size
    for key, size, patch in (
        ("data.num_frames", data.num_frames, frames),
        ("data.resolution", data.resolution, height),
        ("data.resolution", data.resolution, width),
    ):
        require(size % patch == 0, key, f"{size} is not divisible by the patch side {patch} (model.dit.patch_size)")
    longest = max(data.num_frames // frames, data.resolution // min(height, width))
    require(
        longest <= wan.rope_max_seq_len,
        "model.dit.rope_max_seq_len",
        f"{wan.rope_max_seq_len} positions, but a clip is {longest} patches long on an axis",
    )
    mesh = config.mesh
    head_axes = parallel.context_parallel_head_axes(parallel.attention_heads_axes(mesh))
    context_parallel.check_sizes(
        wan.num_attention_heads,
        (data.num_frames // frames) * (data.resolution // height) * (data.resolution // width),
        token_devices=mesh.sequence * mesh.dcn_sequence,
        # -1 (all remaining devices): checked with the mesh.
        head_devices=math.prod(max(mesh[a] * mesh[f"dcn_{a}"], 1) for a in head_axes),
        token_key="mesh.sequence",
        head_keys=tuple(f"mesh.{a}" for a in head_axes),
    )


def _check_unet(config: ml_collections.ConfigDict) -> None:
    data, model, temporal = config.data, config.model, config.model.temporal
    channels = tuple(model.block_out_channels)
    levels = len(channels)
    factor = 2 ** (levels - 1)
    require(
        data.resolution % factor == 0,
        "data.resolution",
        f"{data.resolution} is not divisible by the U-Net's downsampling factor {factor} "
        f"({levels} levels in model.block_out_channels)",
    )
    attention = _per_level(model.attention_levels, levels, "model.attention_levels")
    heads = _per_level(model.num_attention_heads, levels, "model.num_attention_heads")
    for level, width in enumerate(channels):
        require(width % model.norm_num_groups == 0, "model.norm_num_groups", f"does not divide {width} channels")
        spatial = attention[level] or (level == levels - 1 and model.mid_block_attention)
        require(
            not spatial or width % heads[level] == 0,
            "model.num_attention_heads",
            f"{heads[level]} heads do not divide the {width} channels of level {level}",
        )
    for level in temporal.levels:
        require(0 <= level < levels, "model.temporal.levels", f"level {level} does not exist (0..{levels - 1})")
    for level in sorted(set(temporal.levels) | ({levels - 1} if temporal.mid else set())):
        require(
            not temporal.attention or channels[level] % temporal.num_heads == 0,
            "model.temporal.num_heads",
            f"{temporal.num_heads} heads do not divide the {channels[level]} channels of level {level}",
        )
