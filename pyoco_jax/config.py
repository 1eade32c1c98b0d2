"""Loading and validating configs, so a bad one fails before anything compiles.

Configs are Python files with `get_config()`; command-line overrides
(`--config.key=value`) go through `ml_collections.config_flags`, exactly as the
console scripts parse them. Every config is checked against
`pyoco_jax.configs.default`: unknown keys, wrong types and impossible
combinations raise `ConfigError` naming the key to change.
"""

import ast
import os
import re
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from pyoco_jax.configs import default
from pyoco_jax.data.synthetic import check_shape_size
from pyoco_jax.noise import PRIORS


class ConfigError(ValueError):
    """A config value the user must change; the message names the key."""


CHOICES = {
    "data.source": ("synthetic", "video_folder", "tfds", "ucf101", "latents"),
    "data.crop": ("random", "center"),
    "data.temporal_sampling": ("random", "center"),
    "data.ucf101_split": (1, 2, 3),
    "noise.prior": PRIORS,
    "diffusion.formulation": ("edm", "ddpm"),
    "diffusion.ddpm.schedule": ("linear", "scaled_linear", "cosine"),
    "diffusion.ddpm.prediction": ("epsilon", "v", "x0"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots", "offload"),
    "model.attention_backend": ("xla", "cudnn", "splash"),
    "model.temporal.position_encoding": ("none", "sinusoidal", "relative"),
    "model.temporal.arrangement": ("sequential", "parallel"),
    "optim.schedule": ("cosine", "constant"),
    "sample.sampler": ("heun", "euler", "ddim", "dpmpp_2m"),
    "vae.dtype": ("float32", "bfloat16", "float16"),
    "vae.temporal_position_encoding": ("none", "sinusoidal", "relative"),
    "vae.trainable": ("temporal", "decoder"),
    "vae.loss": ("l1", "l2"),
}


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `path` with `--config.key=value` style overrides and validates it."""
    latest: dict[str, str] = {}
    for item in overrides:
        item = item.removeprefix("--").removeprefix("config.")
        latest.pop(item.split("=", 1)[0], None)  # The last override of a key wins (config_flags would
        latest[item.split("=", 1)[0]] = item  # concatenate repeated tuple overrides instead).
    argv = ["pyoco", f"--config={path}", *(f"--config.{item}" for item in latest.values())]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=None, flag_values=flag_values, sys_argv=argv)
    try:
        flag_values(argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as err:
        raise ConfigError(f"cannot load config {path} with overrides {list(overrides)}: {err}") from err
    config = validate(flag_values.config)
    check_data_files(config.data)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """`config` (e.g. restored from a checkpoint) with `key=value` overrides applied, validated.

    Values are Python literals where they parse as one (numbers, tuples, booleans), else strings.
    """
    config = config.copy_and_resolve_references()
    for item in overrides:
        key, sep, text = item.removeprefix("--").removeprefix("config.").partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *sections, leaf = key.split(".")
        target = config
        for name in sections:
            if name not in target or not isinstance(target[name], ml_collections.ConfigDict):
                raise ConfigError(f"unknown config section {name!r} in override {item!r}")
            target = target[name]
        if leaf not in target:
            raise ConfigError(f"unknown config key {key!r} in override {item!r}")
        target[leaf] = value
    return validate(config)


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
    """A config saved by an earlier version (e.g. in a checkpoint), completed with today's defaults.

    Keys added since keep their default values, so old runs still sample, resume and export.
    """

    def merge(base: ml_collections.ConfigDict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
                merge(base[key], value)
            else:
                base[key] = value

    config = default.get_config()
    with config.unlocked():
        merge(config, saved)
    return config


def _check_schema(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str) -> None:
    for key in config.keys():
        name = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(
                f"unknown config key {name!r}; known keys here: {sorted(schema.keys())} "
                "(all options are documented in configs/default.py)"
            )
        value, expected = config[key], schema[key]
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"config key {name!r} must be a section, got {value!r}")
            _check_schema(value, expected, name + ".")
        elif not _same_kind(value, expected):
            raise ConfigError(
                f"config key {name!r} must be {type(expected).__name__} like the default "
                f"{expected!r}, got {type(value).__name__} {value!r}"
            )


def _same_kind(value, expected) -> bool:
    if expected is None or value is None:
        return True
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    if isinstance(expected, (tuple, list)):
        return isinstance(value, (tuple, list))
    if isinstance(expected, int) and isinstance(value, (tuple, list)):
        return True  # Per-level values (e.g. heads) may replace a scalar.
    return isinstance(value, type(expected))


def _get(config: ml_collections.ConfigDict, name: str):
    value = config
    for part in name.split("."):
        value = value[part]
    return value


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r}: {message}")


def _check_mesh(config: ml_collections.ConfigDict) -> None:
    """Axis sizes and rules that are wrong whatever the devices (the device count is checked with the mesh)."""
    from pyoco_jax.parallel import DCN_PREFIX, MESH_AXES, logical_rules  # parallel imports this module

    mesh = config.mesh
    for prefix in ("", DCN_PREFIX):
        sizes = {prefix + name: mesh[prefix + name] for name in MESH_AXES}
        for key, size in sizes.items():
            ok = isinstance(size, int) and (size >= 1 or size == -1)
            _require(ok, f"mesh.{key}", f"must be >= 1 or -1 (all remaining devices), got {size}")
        free = [key for key, size in sizes.items() if size == -1]
        _require(len(free) <= 1, f"mesh.{free[-1] if free else ''}", f"only one of {free} may be -1")
    sequence = mesh.sequence * mesh[DCN_PREFIX + "sequence"]
    _require(sequence >= 1, "mesh.sequence", "cannot be -1: it must divide data.num_frames, so set it explicitly")
    _require(
        config.data.num_frames % sequence == 0,
        "data.num_frames",
        f"{config.data.num_frames} frames cannot be split over mesh.sequence x mesh.dcn_sequence = {sequence} devices",
    )
    logical_rules(mesh)


def _validate_video_data(data: ml_collections.ConfigDict) -> None:
    """Real-video options, and the files a video folder needs, checked before anything is built."""
    _require(data.frame_stride >= 1, "data.frame_stride", f"must be >= 1 (1: every frame), got {data.frame_stride}")
    _require(data.target_fps >= 0, "data.target_fps", f"must be >= 0 (0: use data.frame_stride), got {data.target_fps}")
    _require(
        0.0 <= data.max_failure_fraction <= 1.0,
        "data.max_failure_fraction",
        f"must be in [0, 1] (1: never stop for bad files), got {data.max_failure_fraction}",
    )
    if data.source in ("video_folder", "tfds", "ucf101"):
        _require(data.channels == 3, "data.channels", f"data.source={data.source!r} gives RGB video: use 3")
    if data.source == "tfds":
        _require(bool(data.tfds_name), "data.tfds_name", "name the TFDS dataset for data.source='tfds'")
    if data.source == "video_folder":
        _require(bool(data.path), "data.path", "set it to the video folder for data.source='video_folder'")


def check_data_files(data: ml_collections.ConfigDict) -> None:
    """The files a video-folder run reads exist (checked where data is read: not when sampling or exporting)."""
    if data.source != "video_folder":
        return
    _require(os.path.isdir(data.path), "data.path", f"the video folder {data.path} does not exist")
    if data.metadata:
        metadata = data.metadata if os.path.isabs(data.metadata) else os.path.join(data.path, data.metadata)
        _require(os.path.isfile(metadata), "data.metadata", f"the metadata file {metadata} does not exist")
    else:
        names = ("metadata.csv", "metadata.jsonl")
        _require(
            any(os.path.isfile(os.path.join(data.path, name)) for name in names),
            "data.metadata",
            f"no {' or '.join(names)} in {data.path}; add one or set data.metadata to the file",
        )


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys, types and cross-field constraints; returns the config."""
    _check_schema(config, default.get_config(), "")
    for name, choices in CHOICES.items():
        value = _get(config, name)
        _require(value in choices, name, f"{value!r} is not one of {choices}")
    data, model, optim, temporal = config.data, config.model, config.optim, config.model.temporal
    _require(config.noise.alpha >= 0, "noise.alpha", f"must be >= 0 (0 is iid noise), got {config.noise.alpha}")
    _require(
        config.noise.sample_alpha >= 0 or config.noise.sample_alpha == -1,
        "noise.sample_alpha",
        f"must be >= 0, or -1 for noise.alpha; got {config.noise.sample_alpha}",
    )
    _require(data.num_frames >= 1, "data.num_frames", "must be >= 1")
    _require(data.max_objects >= 1, "data.max_objects", f"must be >= 1, got {data.max_objects}")
    try:
        check_shape_size(data.shape_size)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'data.shape_size': {err}") from None
    _validate_video_data(data)
    _check_mesh(config)
    levels = len(model.block_out_channels)
    factor = 2 ** (levels - 1)
    _require(
        data.resolution % factor == 0,
        "data.resolution",
        f"{data.resolution} is not divisible by the U-Net's downsampling factor {factor} "
        f"({levels} levels in model.block_out_channels)",
    )
    _require(len(model.attention_levels) == levels, "model.attention_levels", f"needs {levels} entries, one per level")
    heads = model.num_attention_heads
    if isinstance(heads, (tuple, list)):
        _require(len(heads) == levels, "model.num_attention_heads", f"needs {levels} entries, one per level")
    for channels in model.block_out_channels:
        _require(
            channels % model.norm_num_groups == 0,
            "model.norm_num_groups",
            f"{model.norm_num_groups} groups do not divide {channels} channels",
        )
    for level in temporal.levels:
        _require(0 <= level < levels, "model.temporal.levels", f"level {level} does not exist (0..{levels - 1})")
    temporal_levels = set(temporal.levels) | ({levels - 1} if temporal.mid else set())
    for level in sorted(temporal_levels):
        channels = model.block_out_channels[level]
        _require(
            not temporal.attention or channels % temporal.num_heads == 0,
            "model.temporal.num_heads",
            f"{temporal.num_heads} heads do not divide the {channels} channels of level {level}",
        )
    _require(
        model.in_channels == data.channels,
        "model.in_channels",
        f"{model.in_channels} differs from data.channels {data.channels}",
    )
    _require(
        data.num_classes == 0 or model.num_classes >= data.num_classes,
        "model.num_classes",
        f"the data has {data.num_classes} classes, the model embeds {model.num_classes}",
    )
    _require(optim.accum_steps >= 1, "optim.accum_steps", "must be >= 1")
    _require(
        data.global_batch_size % optim.accum_steps == 0,
        "data.global_batch_size",
        f"{data.global_batch_size} is not divisible by optim.accum_steps {optim.accum_steps}",
    )
    _require(0.0 <= optim.ema_decay < 1.0, "optim.ema_decay", "must be in [0, 1)")
    _require(optim.lr_scale > 0.0, "optim.lr_scale", f"must be > 0, got {optim.lr_scale}")
    try:
        re.compile(optim.lr_scale_pattern)
    except re.error as err:
        raise ConfigError(
            f"config key 'optim.lr_scale_pattern': {optim.lr_scale_pattern!r} is not a regex ({err})"
        ) from None
    _require(0.0 <= optim.label_drop_rate <= 1.0, "optim.label_drop_rate", "must be in [0, 1]")
    _require(config.sample.num_steps >= 1, "sample.num_steps", "must be >= 1")
    return config
