"""WanTransformer against diffusers' WanTransformer3DModel (tiny random configs, float32, CPU): the forward
through our converter, scanned vs unrolled blocks, export back to diffusers, the converter's errors, logical
axis names, and the parameter counts of the published Wan 2.1 sizes."""

import dataclasses
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import WanTransformer3DModel
from flax import nnx
from pyoco_jax.configs import default

from pyoco_jax import parallel
from pyoco_jax.convert.diffusers_names import CONFIG_NAME, WEIGHTS_NAME
from pyoco_jax.convert.merge import ConversionError, flat_params
from pyoco_jax.convert.wan_transformer import (
    INDEX_NAME,
    diffusers_state_dict,
    load_wan_transformer,
    save_wan_transformer,
)
from pyoco_jax.models import axes
from pyoco_jax.models.dit import WAN21_1_3B, WAN21_14B, WanConfig, WanTransformer
from tests.models.model_testing import make_rngs, perturb

TINY = dict(
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    ffn_dim=48,
    num_layers=2,
)
IMAGE_DIM = 20
# diffusers' Wan attention takes the last 512 context tokens as text and the rest as image tokens.
DIFFUSERS_TEXT_TOKENS = 512


@dataclasses.dataclass(frozen=True)
class Case:
    config: dict
    video: tuple[int, int, int]  # frames, height, width
    text_tokens: int = 7
    image_tokens: int = 0  # per image; first-last-frame models take two images per clip


CASES = {
    # Odd frame count, H != W.
    "patch-1x2x2": Case(dict(TINY), (3, 8, 12)),
    # 3 latent frames after the temporal patch; qk_norm None (diffusers >= 0.35 still normalises q and k, as we
    # do); no cross-attention norm; out_channels != in_channels.
    "patch-2x2x2-no-cross-norm": Case(
        dict(TINY, patch_size=(2, 2, 2), qk_norm=None, cross_attn_norm=False, out_channels=3, eps=1e-5), (6, 6, 10)
    ),
    # Non-cubic patch with ph != pw; head_dim 10 splits 6/2/2 over frames/height/width.
    "patch-1x3x2-head10": Case(
        dict(TINY, patch_size=(1, 3, 2), num_attention_heads=3, attention_head_dim=10, num_layers=3), (5, 9, 4)
    ),
    "i2v": Case(
        dict(TINY, image_dim=IMAGE_DIM, added_kv_proj_dim=24), (3, 4, 6), DIFFUSERS_TEXT_TOKENS, image_tokens=5
    ),
    "flf2v": Case(
        dict(TINY, image_dim=IMAGE_DIM, added_kv_proj_dim=24, pos_embed_seq_len=6),
        (3, 4, 6),
        DIFFUSERS_TEXT_TOKENS,
        image_tokens=3,
    ),
}
# Float32 on both sides; errors are relative to the output's largest magnitude.
TOLERANCE = 1e-4

_forward = nnx.jit(lambda model, x, t, context, image: model(x, t, context=context, image_context=image))


def _saved_reference(folder, config: dict, seed: int = 0) -> WanTransformer3DModel:
    """A diffusers model with every weight moved off its init (zero-init positions then matter), saved to `folder`."""
    torch.manual_seed(seed)
    reference = WanTransformer3DModel(**config).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(0.1 * torch.randn_like(param))
    reference.save_pretrained(folder)
    return reference


def _inputs(case: Case, batch: int = 2, seed: int = 0):
    """(x channels-last, t, text, image or None); a first-last-frame model gets diffusers' (2B, S, E) images."""
    rng = np.random.default_rng(seed)
    config = {**TINY, **case.config}
    x = rng.standard_normal((batch, *case.video, config["in_channels"]), np.float32)
    t = np.array([3.0, 700.0][:batch], np.float32)
    text = rng.standard_normal((batch, case.text_tokens, config["text_dim"]), np.float32)
    images = 2 if config.get("pos_embed_seq_len") else 1
    image = (
        rng.standard_normal((batch * images, case.image_tokens, IMAGE_DIM), np.float32) if case.image_tokens else None
    )
    return x, t, text, image


def _diffusers_forward(reference: WanTransformer3DModel, x, t, text, image) -> np.ndarray:
    with torch.no_grad():
        out = reference(
            torch.from_numpy(x.transpose(0, 4, 1, 2, 3)),
            torch.from_numpy(t),
            torch.from_numpy(text),
            None if image is None else torch.from_numpy(image),
        ).sample
    return out.numpy().transpose(0, 2, 3, 4, 1)


def _relative_error(ours, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_diffusers(tmp_path, name):
    case = CASES[name]
    reference = _saved_reference(tmp_path, case.config)
    model = load_wan_transformer(tmp_path)
    x, t, text, image = _inputs(case)
    expected = _diffusers_forward(reference, x, t, text, image)
    ours = _forward(model, x, t, text, image)
    error = _relative_error(ours, expected)
    print(f"{name}: max abs error {error * np.abs(expected).max():.2e}, {error:.2e} of the output scale")
    assert ours.shape == expected.shape == (*x.shape[:-1], reference.config.out_channels)
    assert ours.dtype == jnp.float32
    assert error < TOLERANCE


@pytest.fixture(scope="module")
def i2v_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan_i2v")
    _saved_reference(folder, CASES["i2v"].config)
    return folder


def test_unrolled_blocks_equal_scanned_blocks(i2v_folder):
    inputs = _inputs(CASES["i2v"])
    scanned = _forward(load_wan_transformer(i2v_folder), *inputs)
    unrolled = _forward(load_wan_transformer(i2v_folder, scan_layers=False), *inputs)
    difference = float(jnp.abs(scanned - unrolled).max())
    print(f"scanned vs unrolled blocks: max abs difference {difference:.2e}")
    assert difference < 1e-6 * float(jnp.abs(scanned).max())


@pytest.mark.slow  # two backward compiles, about 15 s
def test_remat_and_unrolled_blocks_give_the_same_gradients(tmp_path):
    case = CASES["patch-1x2x2"]
    _saved_reference(tmp_path, case.config)
    inputs = _inputs(case, batch=1)

    def gradients(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        loss = lambda p: jnp.mean(jnp.square(nnx.merge(graphdef, p, rest)(*inputs)))
        return jax.jit(jax.grad(loss))(params)

    plain = gradients(load_wan_transformer(tmp_path, scan_layers=False))
    rematerialised = gradients(load_wan_transformer(tmp_path, remat="full"))
    for (path, a), b in zip(jax.tree.leaves_with_path(plain), jax.tree.leaves(rematerialised), strict=True):
        assert float(jnp.abs(a - b).max()) <= 1e-5 * max(float(jnp.abs(a).max()), 1e-3), path


def test_bfloat16_compute_stays_close(i2v_folder):
    inputs = _inputs(CASES["i2v"])
    exact = _forward(load_wan_transformer(i2v_folder), *inputs)
    low = _forward(load_wan_transformer(i2v_folder, dtype="bfloat16"), *inputs)
    error = _relative_error(low, np.asarray(exact))
    print(f"bfloat16 compute vs float32: max error {error:.2e} of the output scale")
    assert low.dtype == jnp.float32
    assert error < 0.05


def _random_model(config: WanConfig, seed: int = 0) -> WanTransformer:
    """Our own init, every parameter perturbed (the zero-init head then matters)."""
    model = WanTransformer(config, rngs=make_rngs(seed))
    perturb(model, pattern=re.compile(""), scale=0.1, seed=seed)
    return model


def _from_pretrained(folder, monkeypatch) -> tuple[WanTransformer3DModel, dict]:
    """diffusers' own loader and its report of missing, unexpected and mismatched keys.

    Without `accelerate` installed, diffusers refuses models that keep modules in float32; everything is
    float32 here, so that list is switched off for the load.
    """
    monkeypatch.setattr(WanTransformer3DModel, "_keep_in_fp32_modules", None)
    model, info = WanTransformer3DModel.from_pretrained(folder, output_loading_info=True)
    return model.eval(), info


def test_export_loads_in_diffusers_and_computes_the_same(tmp_path, monkeypatch):
    case = CASES["flf2v"]
    model = _random_model(WanConfig.from_diffusers({**TINY, **case.config}))
    files = save_wan_transformer(model, tmp_path)
    assert [f.name for f in files] == [CONFIG_NAME, WEIGHTS_NAME]
    reference, info = _from_pretrained(tmp_path, monkeypatch)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    inputs = _inputs(case)
    error = _relative_error(_forward(model, *inputs), _diffusers_forward(reference, *inputs))
    print(f"export to diffusers: max error {error:.2e} of the output scale")
    assert error < TOLERANCE


def test_sharded_export_round_trips(tmp_path, monkeypatch):
    model = _random_model(WanConfig.from_diffusers({**TINY, **CASES["i2v"].config}), seed=1)
    files = save_wan_transformer(model, tmp_path, max_shard_bytes=8_000)
    shards = [f for f in files if f.name.startswith("diffusion_pytorch_model-")]
    assert len(shards) > 2 and (tmp_path / INDEX_NAME).exists() and not (tmp_path / WEIGHTS_NAME).exists()
    reference, info = _from_pretrained(tmp_path, monkeypatch)
    assert not any(info.values()), info
    ours = diffusers_state_dict(model)
    theirs = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    reloaded = flat_params(load_wan_transformer(tmp_path))
    assert all(np.array_equal(v.get_value(), reloaded[k].get_value()) for k, v in flat_params(model).items())

    save_wan_transformer(model, tmp_path, dtype=jnp.bfloat16)  # one file again: the shards must go
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    halved = flat_params(load_wan_transformer(tmp_path, param_dtype="bfloat16"))
    for name, variable in flat_params(model).items():
        assert np.array_equal(halved[name].get_value(), variable.get_value().astype(jnp.bfloat16)), name


def _rewrite_weights(folder, edit) -> None:
    tensors = safetensors.numpy.load_file(folder / WEIGHTS_NAME)
    edit(tensors)
    safetensors.numpy.save_file(tensors, folder / WEIGHTS_NAME)


def test_converter_errors_say_what_is_wrong(tmp_path):
    folder = tmp_path / "transformer"
    _saved_reference(folder, CASES["patch-1x2x2"].config)
    assert load_wan_transformer(tmp_path).config.num_layers == 2  # a pipeline folder's transformer/ is found

    def swap(tensors):
        tensors.pop("blocks.1.attn2.norm_k.weight")
        tensors["condition_embedder.extra.weight"] = np.zeros((2, 2), np.float32)
        tensors["condition_embedder.image_embedder.norm_added_q.weight"] = np.zeros(2, np.float32)  # ignored

    _rewrite_weights(folder, swap)
    with pytest.raises(ConversionError, match=r"blocks\.attn2\.norm_k\.scale: blocks \[0\]"):
        load_wan_transformer(folder)
    _rewrite_weights(folder, lambda t: t.pop("blocks.0.attn2.norm_k.weight"))
    unused_and_missing = r"(?s)no place in the model: condition_embedder\.extra\.kernel.*missing.*attn2\.norm_k"
    with pytest.raises(ConversionError, match=unused_and_missing):
        load_wan_transformer(folder)

    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ConversionError, match="not a WanTransformer3DModel"):
        load_wan_transformer(folder)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    (folder / WEIGHTS_NAME).rename(folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ConversionError, match="pickle weights.*refused"):
        load_wan_transformer(folder)
    with pytest.raises(ConversionError, match="no config.json"):
        load_wan_transformer(tmp_path / "elsewhere")


def test_call_errors_say_what_is_wrong(i2v_folder):
    model = load_wan_transformer(i2v_folder)
    x, t, text, image = _inputs(CASES["i2v"])
    with pytest.raises(ValueError, match=r"\(B, F, H, W, 4\)"):
        model(x[..., :3], t, text, image)
    with pytest.raises(ValueError, match="height 3 by 2"):
        model(x[:, :, :3], t, text, image)
    with pytest.raises(ValueError, match="context must be text embeddings"):
        model(x, t, None, image)
    with pytest.raises(ValueError, match="needs image_context"):
        model(x, t, text)
    with pytest.raises(ValueError, match=r"image_context must be \(B=2, S, 20\)"):
        model(x, t, text, image[:1])
    with pytest.raises(ValueError, match="no per-token timesteps"):
        model(x, np.zeros((2, 5), np.float32), text, image)
    model.config = dataclasses.replace(model.config, rope_max_seq_len=2)
    with pytest.raises(ValueError, match="exceed rope_max_seq_len=2"):
        model(x, t, text, image)


def test_config_round_trips_and_checks():
    reference_config = dict(WanTransformer3DModel(**TINY).config)
    config = WanConfig.from_diffusers(reference_config)
    assert config == WanConfig(**{**TINY, "patch_size": (1, 2, 2)})
    assert WanConfig.from_diffusers(config.to_diffusers()) == config
    assert set(config.to_diffusers()) - {"_class_name"} <= set(reference_config)
    assert WanConfig.from_diffusers({**TINY, "out_channels": None}).out_channels == TINY["in_channels"]
    assert WanConfig.from_diffusers({**TINY, "window_size": [-1, -1]}).num_layers == 2  # unknown keys are ignored
    with pytest.raises(ValueError, match="image_dim and added_kv_proj_dim"):
        WanConfig(**TINY, image_dim=8)
    with pytest.raises(ValueError, match="added_kv_proj_dim=8 must equal the model width"):
        WanConfig(**TINY, image_dim=8, added_kv_proj_dim=8)
    with pytest.raises(ValueError, match="qk_norm"):
        WanConfig(**TINY, qk_norm="layer_norm")
    with pytest.raises(ValueError, match="even"):
        WanConfig(**{**TINY, "attention_head_dim": 7})
    with pytest.raises(ValueError, match="patch_size"):
        WanConfig(**TINY, patch_size=(1, 2))


def test_every_parameter_carries_logical_axes_and_shards():
    config = WanConfig.from_diffusers({**TINY, **CASES["flf2v"].config})
    abstract = nnx.eval_shape(lambda: WanTransformer(config, rngs=nnx.Rngs(0)))
    names = {}
    for name, variable in flat_params(abstract).items():
        names[name] = variable.get_metadata().get("out_sharding")
        assert names[name] is not None and len(names[name]) == variable.get_value().ndim, name
        assert set(names[name]) <= {*axes.VOCABULARY, None}, name
        assert not name.startswith("blocks.") or names[name][0] is None, name  # the layer axis is never sharded
    assert names["blocks.attn1.to_q.kernel"] == (None, axes.EMBED, axes.HEADS)
    assert (
        names["blocks.attn2.to_k.kernel"] == names["blocks.attn2.add_k_proj.kernel"] == (None, axes.CONTEXT, axes.HEADS)
    )
    assert names["blocks.ffn.proj_in.kernel"] == (None, axes.EMBED, axes.MLP)
    assert names["condition_embedder.time_embedder.linear_1.kernel"] == (axes.EMBED, axes.TEMB)
    assert names["patch_embedding.kernel"] == (*[axes.CONV_WINDOW] * 3, axes.CONV_IN, axes.EMBED)

    mesh_config = default.get_config().mesh
    mesh_config.update(data=2, fsdp=2, tensor=2, sequence=1)
    mesh = parallel.make_mesh(mesh_config)
    specs = parallel.partition_specs(nnx.state(abstract, nnx.Param), mesh, parallel.logical_rules(mesh_config))
    flat = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(specs)}
    assert flat["blocks.attn1.to_q.kernel"] == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert flat["blocks.ffn.proj_out.kernel"] == jax.sharding.PartitionSpec(None, "tensor", "fsdp")


PUBLISHED = {"1.3B": WAN21_1_3B, "14B": WAN21_14B}


def _diffusers_count(config: WanConfig) -> int:
    with torch.device("meta"):
        reference = WanTransformer3DModel.from_config(config.to_diffusers())
    return sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_sizes_have_diffusers_parameter_count(name):
    config = PUBLISHED[name]
    abstract = nnx.eval_shape(lambda: WanTransformer(config, rngs=nnx.Rngs(0)))
    ours = sum(math.prod(v.get_value().shape) for v in flat_params(abstract).values())
    theirs = _diffusers_count(config)
    print(f"Wan2.1 {name}: ours {ours:,}, diffusers {theirs:,}")
    assert ours == theirs
