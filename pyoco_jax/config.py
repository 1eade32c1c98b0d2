"""Loading and validating configs, so a bad one fails before anything compiles.

Configs are Python files with `get_config()`; command-line overrides
(`--config.key=value`) go through `ml_collections.config_flags`, exactly as the
console scripts parse them. Every config is checked against
`pyoco_jax.configs.default`: unknown keys, wrong types and impossible
combinations raise `ConfigError` naming the key to change.
"""

from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from pyoco_jax.configs import default
from pyoco_jax.noise import PRIORS


class ConfigError(ValueError):
    """A config value the user must change; the message names the key."""


CHOICES = {
    "data.source": ("synthetic",),
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
    return validate(flag_values.config)


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


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys, types and cross-field constraints; returns the config."""
    _check_schema(config, default.get_config(), "")
    for name, choices in CHOICES.items():
        value = _get(config, name)
        _require(value in choices, name, f"{value!r} is not one of {choices}")
    data, model, optim, temporal = config.data, config.model, config.optim, config.model.temporal
    _require(config.noise.alpha >= 0, "noise.alpha", f"must be >= 0 (0 is iid noise), got {config.noise.alpha}")
    _require(data.num_frames >= 1, "data.num_frames", "must be >= 1")
    _require(
        config.mesh.sequence >= 1 and data.num_frames % config.mesh.sequence == 0,
        "data.num_frames",
        f"{data.num_frames} frames cannot be split over mesh.sequence={config.mesh.sequence} devices",
    )
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
    _require(0.0 <= optim.label_drop_rate <= 1.0, "optim.label_drop_rate", "must be in [0, 1]")
    _require(config.sample.num_steps >= 1, "sample.num_steps", "must be >= 1")
    return config
