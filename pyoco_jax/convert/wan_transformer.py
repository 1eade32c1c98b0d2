"""diffusers `WanTransformer3DModel` folders <-> our WanTransformer, without torch.

A folder holds config.json and diffusion_pytorch_model.safetensors (or shards listed by
diffusion_pytorch_model.safetensors.index.json); a pipeline folder's `transformer/` is found too.
Names map one to one except `to_out.0` -> `to_out` and the feed-forwards' `net.0.proj`/`net.2` ->
`proj_in`/`proj_out`; linear weights (out, in) become kernels (in, out), the Conv3d patch embedding
(O, I, kt, kh, kw) becomes (kt, kh, kw, I, O), norm weights become `scale`, and the per-block tensors
`blocks.N.*` are stacked on a leading layer axis (`blocks.*`), the layout `nnx.scan` runs. Loading
checks that every tensor is used and every parameter filled; pickle `.bin` weights are refused.
"""

import dataclasses
import json
import re
from collections import defaultdict
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from safetensors.numpy import save_file

from pyoco_jax.convert.clip import component_folder, filled_model
from pyoco_jax.convert.component import read_component_config, read_component_tensors
from pyoco_jax.convert.converted import converted_root, read_component
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME
from pyoco_jax.convert.merge import ConversionError, flat_params
from pyoco_jax.errors import ConfigError
from pyoco_jax.models.dit import WanConfig, WanTransformer, wan_config
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.lora import adapted_modules

SUBFOLDER = "transformer"
INDEX_NAME = f"{WEIGHTS_NAME}.index.json"
SHARD_NAME = "diffusion_pytorch_model-{index:05d}-of-{count:05d}.safetensors"
MAX_SHARD_BYTES = 10 * 10**9  # diffusers' default max_shard_size ("10GB")
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA file name.
LORA_PREFIX = "transformer"  # The Wan pipeline's component the adapters belong to.
# (diffusers, ours) module-name pieces.
RENAMES = (
    (".to_out.0.", ".to_out."),
    (".ffn.net.0.proj.", ".ffn.proj_in."),
    (".ffn.net.2.", ".ffn.proj_out."),
    (".ff.net.0.proj.", ".ff.proj_in."),
    (".ff.net.2.", ".ff.proj_out."),
)
KEPT_LEAVES = ("scale_shift_table", "pos_embed")  # parameters stored under the same name and layout
# diffusers <= 0.3x saved an RMSNorm for image queries that it never applied; diffusers skips it on load too.
IGNORED_TENSOR = re.compile(r"\.norm_added_q\.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_STACKED = "blocks."


def _renamed(name: str, pairs: tuple[tuple[str, str], ...]) -> str:
    dotted = f".{name}"
    for old, new in pairs:
        dotted = dotted.replace(old, new)
    return dotted[1:]


def _to_ours(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One diffusers tensor (not per block) -> our name and layout."""
    module, leaf = _renamed(name, RENAMES).rpartition(".")[::2]
    if leaf == "bias" or leaf in KEPT_LEAVES:
        return _renamed(name, RENAMES), value
    if leaf == "weight" and value.ndim == 1:
        return f"{module}.scale", value
    if leaf == "weight" and value.ndim == 2:
        return f"{module}.kernel", value.T
    if leaf == "weight" and value.ndim == 5:
        return f"{module}.kernel", value.transpose(2, 3, 4, 1, 0)
    raise ConversionError(f"unexpected tensor {name!r} {value.shape} in a WanTransformer3DModel checkpoint")


def _to_diffusers(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One of our parameters (not stacked) -> diffusers' name and layout."""
    theirs = _renamed(name, tuple((ours, diffusers) for diffusers, ours in RENAMES))
    module, leaf = theirs.rpartition(".")[::2]
    if leaf == "bias" or leaf in KEPT_LEAVES:
        return theirs, value
    if leaf == "scale":
        return f"{module}.weight", value
    if leaf == "kernel" and value.ndim == 2:
        return f"{module}.weight", value.T
    if leaf == "kernel" and value.ndim == 5:
        return f"{module}.weight", value.transpose(4, 3, 0, 1, 2)
    raise ConversionError(f"no diffusers equivalent for parameter {name!r} {value.shape}")


def convert_state_dict(tensors: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """diffusers tensors -> our dotted parameter names and layouts, per-block tensors stacked per name."""
    out, per_block = {}, defaultdict(dict)
    for name, value in tensors.items():
        if IGNORED_TENSOR.search(name):
            logging.info("skipping %s: diffusers never applies it", name)
            continue
        block = _BLOCK.match(name)
        if block:
            ours, layout = _to_ours(block.group(2), value)
            per_block[_STACKED + ours][int(block.group(1))] = layout
        else:
            ours, layout = _to_ours(name, value)
            out[ours] = layout
    problems = []
    for name, layers in sorted(per_block.items()):
        if sorted(layers) != list(range(num_layers)):
            problems.append(f"{name}: blocks {sorted(layers)}, the config has num_layers={num_layers}")
            continue
        out[name] = np.stack([layers[i] for i in range(num_layers)])
    if problems:
        raise ConversionError("the checkpoint's blocks do not match its config:\n  " + "\n  ".join(problems))
    return out


def diffusers_state_dict(model: WanTransformer, dtype: jnp.dtype | None = None) -> dict[str, np.ndarray]:
    """The model's parameters under diffusers' names and layouts (blocks unstacked), cast to `dtype` if given.

    A model with pyoco_jax's class embedding is refused: diffusers' Wan has no place for it.
    """
    if model.class_embedding is not None:
        raise ConversionError(
            "the DiT has a class embedding (model.num_classes > 0), which diffusers' WanTransformer3DModel lacks; "
            "export it with pyoco-export --format orbax"
        )
    out = {}
    for name, variable in flat_params(model).items():
        value = np.asarray(variable.get_value())
        if dtype is not None:
            value = value.astype(jnp.dtype(dtype))
        if name.startswith(_STACKED):
            for layer, layer_value in enumerate(value):
                theirs, layout = _to_diffusers(name.removeprefix(_STACKED), layer_value)
                out[f"blocks.{layer}.{theirs}"] = layout
        else:
            theirs, layout = _to_diffusers(name, value)
            out[theirs] = layout
    return {name: np.ascontiguousarray(value) for name, value in out.items()}


def read_wan_config(path: str | Path) -> WanConfig:
    """The WanConfig of a diffusers transformer (or pipeline) folder."""
    return read_component_config(path, SUBFOLDER, "WanTransformer3DModel", WanConfig.from_diffusers)


def check_wan_architecture(config: ml_collections.ConfigDict, path: str | Path, use: str) -> WanConfig:
    """The folder's WanConfig, after refusing a run whose DiT differs from it or that would not train it with flow
    matching (as every Wan model was trained); `use` names the config key or flag that gave `path`."""
    if config.model.backbone != "dit":
        raise ConfigError(
            f"config key 'model.backbone': is {config.model.backbone!r}, but {use}={str(path)!r} is a Wan "
            "transformer; use a DiT config (configs/wan21_1_3b.py, wan21_14b.py)"
        )
    theirs, ours = read_wan_config(path), wan_config(config.model)
    different = [
        f"{field.name} {getattr(ours, field.name)!r} (the folder: {getattr(theirs, field.name)!r})"
        for field in dataclasses.fields(WanConfig)
        if getattr(ours, field.name) != getattr(theirs, field.name)
    ]
    if different:
        raise ConfigError(
            f"config key 'model.dit': the run's DiT is not the transformer of {use}={str(path)!r}: "
            f"{', '.join(different)}; set model.dit.* and model.in_channels/out_channels/cross_attention_dim to "
            "the folder's (configs/wan21_1_3b.py and wan21_14b.py have Wan 2.1's)"
        )
    if config.diffusion.formulation != "flow":
        raise ConfigError(
            f"config key 'diffusion.formulation': is {config.diffusion.formulation!r}, but {use}={str(path)!r} "
            "is a Wan transformer, trained with flow matching; set it to 'flow'"
        )
    return theirs


def read_wan_params(path: str | Path) -> tuple[WanConfig, dict[str, np.ndarray]]:
    """(config, parameters by our dotted names and layouts) of a diffusers transformer (or pipeline) folder, or of
    a pyoco-convert output."""
    folder = component_folder(path, SUBFOLDER, "diffusers WanTransformer3DModel")
    config = read_wan_config(folder)
    if converted_root(folder):  # Already our names and layouts.
        return config, read_component(folder, SUBFOLDER)
    return config, convert_state_dict(read_component_tensors(folder, "WanTransformer3DModel"), config.num_layers)


def load_wan_transformer(
    path: str | Path,
    *,
    dtype: str | jnp.dtype = jnp.float32,
    param_dtype: str | jnp.dtype = jnp.float32,
    scan_layers: bool = True,
    remat: str = "none",
    attention_backend: str = "xla",
) -> WanTransformer:
    """Our WanTransformer with the weights of a diffusers `WanTransformer3DModel` folder.

    `dtype`: compute dtype; `param_dtype`: storage dtype (tensors are cast); the rest as `WanTransformer`'s.
    """
    config, params = read_wan_params(path)
    precision = Precision(jnp.dtype(dtype), jnp.dtype(param_dtype))
    build = lambda: WanTransformer(
        config,
        precision=precision,
        scan_layers=scan_layers,
        remat=remat,
        attention_backend=attention_backend,
        rngs=nnx.Rngs(0),
    )
    return filled_model(build, params, f"Wan transformer {path}")


def _shards(tensors: dict[str, np.ndarray], max_shard_bytes: int) -> list[dict[str, np.ndarray]]:
    """Tensors in name order, cut into files of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards, size = [{}], 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    return shards


def save_wan_transformer(
    model: WanTransformer,
    path: str | Path,
    *,
    dtype: str | jnp.dtype | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> list[Path]:
    """Writes `model` as a diffusers `WanTransformer3DModel` folder (config.json + safetensors, sharded with an
    index above `max_shard_bytes`), which `WanTransformer3DModel.from_pretrained` loads; returns the files.

    `dtype`: cast the tensors (e.g. bfloat16 to halve the files); None keeps the parameters' dtype.
    Weight files of an earlier save in `path` are removed first, so a stale one is never read.
    """
    shards = _shards(diffusers_state_dict(model, dtype), max_shard_bytes)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [folder / WEIGHTS_NAME, folder / INDEX_NAME, *folder.glob("diffusion_pytorch_model-*-of-*")]:
        stale.unlink(missing_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_diffusers(), indent=2) + "\n")
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], folder / WEIGHTS_NAME, metadata=metadata)
        return [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
    weight_map, files = {}, []
    for index, shard in enumerate(shards, start=1):
        file = folder / SHARD_NAME.format(index=index, count=len(shards))
        save_file(shard, file, metadata=metadata)
        weight_map.update(dict.fromkeys(shard, file.name))
        files.append(file)
    total = sum(t.nbytes for shard in shards for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [folder / CONFIG_NAME, folder / INDEX_NAME, *files]


def diffusers_lora_state_dict(params: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """The LoRA adapters in `params` (our dotted names) as the PEFT tensors diffusers' Wan pipeline
    `load_lora_weights` reads: `transformer.<module>.lora_A.weight` (rank, in) and `lora_B.weight` (out, rank),
    per block. The file has no alphas, so diffusers scales by 1: `scale` (alpha / rank) is folded into B."""
    out = {}
    for module in adapted_modules(params):
        down, up = np.asarray(params[f"{module}.lora.a"]), np.asarray(params[f"{module}.lora.b"])
        up = (up.astype(np.float32) * scale).astype(up.dtype)
        layers = list(enumerate(zip(down, up, strict=True))) if module.startswith(_STACKED) else [(None, (down, up))]
        for layer, (a, b) in layers:
            theirs = _renamed(module.removeprefix(_STACKED) + ".", tuple((o, d) for d, o in RENAMES)).rstrip(".")
            name = f"{LORA_PREFIX}.{theirs}" if layer is None else f"{LORA_PREFIX}.blocks.{layer}.{theirs}"
            out[f"{name}.lora_A.weight"] = np.ascontiguousarray(a.T)
            out[f"{name}.lora_B.weight"] = np.ascontiguousarray(b.T)
    return out


def save_wan_lora(params: dict[str, np.ndarray], scale: float, path: str | Path, dtype: str | None = None) -> Path:
    """Writes the adapters of `params` as `path/pytorch_lora_weights.safetensors` (the file diffusers'
    `load_lora_weights(path)` looks for), cast to `dtype` if given; returns the file."""
    tensors = diffusers_lora_state_dict(params, scale)
    if dtype is not None:
        tensors = {name: value.astype(jnp.dtype(dtype)) for name, value in tensors.items()}
    file = Path(path) / LORA_WEIGHTS_NAME
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, file, metadata={"format": "pt"})
    return file
