"""Loading and validating configs, so a bad one fails before anything compiles.

Configs are Python files with `get_config()`; overrides (`--config.key=value` on every CLI) go through
one parser (`pyoco_jax.config_values`). Every config is checked against `pyoco_jax.configs.default`:
unknown keys, wrong types, impossible values and combinations, and missing files raise `ConfigError`
naming the key to change. Local paths are made absolute here, once, so a run keeps working whatever
the current directory of the code that reads them (Orbax refuses relative paths).
"""

import importlib.util
import os
from collections.abc import Iterable, Sequence

import ml_collections

from pyoco_jax.config_rules import check_combinations, check_values, get
from pyoco_jax.config_values import apply_overrides_in_place, split_override
from pyoco_jax.configs import default
from pyoco_jax.errors import ConfigError, UserError
from pyoco_jax.paths import absolute, is_remote

__all__ = ["ConfigError", "apply_overrides", "check_data_files", "load_config", "validate", "with_defaults"]

# Keys holding local paths (or gs:// URLs), made absolute when a config is loaded.
PATH_KEYS = (
    "data.path",
    "data.tfds_data_dir",
    "train.init_from",
    "train.convert_cache_dir",
    "train.eval_clip",
    "vae.path",
    "vae.video_decoder",
    "text.path",
)
# Of those, the ones that must exist when set (weights a run reads).
EXISTING_PATH_KEYS = ("train.init_from", "train.eval_clip", "vae.path", "vae.video_decoder", "text.path")


def load_config(
    path: str, overrides: Sequence[str] = (), *, reads_data: bool = True, produced_under: str = ""
) -> ml_collections.ConfigDict:
    """The config of file `path` with `key=value` overrides (the last of a key wins), validated.

    `reads_data=False` for commands that do not read the training data (converting, preparing a cache).
    `produced_under`: a folder whose paths need not exist yet (a sweep's workdir, where earlier runs write
    what later ones read).
    """
    config = _read_config_file(path)
    apply_overrides_in_place(config, overrides)
    config = validate(config)
    check_paths_exist(config, EXISTING_PATH_KEYS, produced_under)
    if reads_data:
        check_data_files(config.data)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """`config` (e.g. restored from a checkpoint) with `key=value` overrides applied, validated."""
    config = config.copy_and_resolve_references()
    apply_overrides_in_place(config, overrides)
    config = validate(config)
    overridden = {split_override(item)[0] for item in overrides}
    check_paths_exist(config, [key for key in EXISTING_PATH_KEYS if key in overridden])
    return config


def _read_config_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist (configs live in configs/*.py)")
    spec = importlib.util.spec_from_file_location(f"pyoco_config_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config()
    except Exception as err:  # The file is the user's code: say where it failed, in one line.
        raise ConfigError(f"config file {path} failed to load: {type(err).__name__}: {err}") from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config file {path}: get_config() must return an ml_collections.ConfigDict")
    return config


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
    if "pretrained_prediction" not in saved.get("diffusion", {}).get("edm", {}) and config.train.init_from:
        config.diffusion.edm.pretrained_prediction = "edm"  # What such a run trained with before the VP bridge.
    return config


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys, types, values and cross-field constraints; makes local paths absolute; returns the config."""
    _check_schema(config, default.get_config(), "")
    check_values(config)
    check_combinations(config)
    _absolute_paths(config)
    return config


def _absolute_paths(config: ml_collections.ConfigDict) -> None:
    for key in PATH_KEYS:
        value = get(config, key)
        if value:
            section, leaf = key.rsplit(".", 1)
            get(config, section)[leaf] = absolute(value)


def check_paths_exist(config: ml_collections.ConfigDict, keys: Iterable[str], produced_under: str = "") -> None:
    """Each set local path among `keys` exists (remote ones are read later, by the code that needs them),
    except those inside `produced_under`, which are made before they are read."""
    for key in keys:
        value = get(config, key)
        later = produced_under and (value + os.sep).startswith(absolute(produced_under) + os.sep)
        if value and not is_remote(value) and not later and not os.path.exists(value):
            raise ConfigError(f"config key {key!r}: {value} does not exist")


def check_data_files(data: ml_collections.ConfigDict) -> None:
    """The files a run reads its data from exist and hold what the config asks of them."""
    if data.source == "latents" and not data.path:
        raise ConfigError("config key 'data.path': set it to the latent cache that pyoco-prepare wrote")
    if data.source in ("video_folder", "latents") or (data.source == "ucf101" and data.path):
        if not os.path.isdir(data.path):
            raise ConfigError(f"config key 'data.path': the {data.source} folder {data.path} does not exist")
    if data.source == "latents":
        from pyoco_jax.data.latents import read_index

        try:
            read_index(data.path)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"config key 'data.path': {err}") from None
    if data.source == "video_folder":
        from pyoco_jax.data.metadata import read_metadata, resolve_metadata, select_split
        from pyoco_jax.data.video_folder import check_labels

        try:
            metadata = resolve_metadata(data.path, data.metadata)
            check_labels(select_split(read_metadata(metadata), data.split, metadata), data.num_classes, metadata)
        except FileNotFoundError as err:
            raise ConfigError(f"config key 'data.metadata': {err}") from None
        except UserError as err:
            raise ConfigError(str(err)) from None


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
        return isinstance(value, int | float)
    if isinstance(expected, tuple | list):
        return isinstance(value, tuple | list)
    if isinstance(expected, int) and isinstance(value, tuple | list):
        return True  # Per-level values (e.g. heads) may replace a scalar.
    return isinstance(value, type(expected))
