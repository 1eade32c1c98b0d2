"""LoRA (models/lora.py) on both backbones: adapters start as the base model and add scale * x A B, only they
train (the base gets no gradient, optimizer state or EMA), dropout is drawn per example, merging equals the
adapted model, and a DiT's adapters load into diffusers' Wan pipeline and change its output as they change ours."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from pyoco_jax.config import load_config
from pyoco_jax.convert.export import export, without_lora
from pyoco_jax.convert.merge import flat_params
from pyoco_jax.convert.wan_transformer import LORA_WEIGHTS_NAME
from pyoco_jax.errors import ConfigError
from pyoco_jax.models.lora import ADAPTER_PATTERN, _dropout, adapters, is_adapter, merge_lora_params
from pyoco_jax.train.build import build_model, build_run
from pyoco_jax.train.state import trainable_filter
from pyoco_jax.train.step import make_train_step
from pyoco_jax.train.weights import model_from_weights
from tests.convert.test_dit_export import SMALL_DIT, TEXT_FREE, _dit_run
from tests.models.test_wan_transformer import _diffusers_forward, _from_pretrained
from tests.train.helpers import REPO, fast_config

TINY_DIT = str(REPO / "configs" / "tiny_dit.py")
LORA = ["model.lora.rank=4", "model.lora.alpha=8.0"]
_forward = nnx.jit(lambda model, x, t: model(x, t))


def _dit_config(*overrides: str):
    return load_config(TINY_DIT, [*SMALL_DIT, *TEXT_FREE, "data.global_batch_size=2", *overrides], reads_data=False)


def _inputs(batch: int = 2):
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, 4, 16, 16, 3), np.float32), np.array([20.0, 900.0], np.float32)


def _move(model: nnx.Module, skip_adapters: bool = False, seed: int = 1) -> None:
    """Every parameter moved off its init (a fresh DiT's zero head would hide everything, B = 0 the adapters)."""
    rng = np.random.default_rng(seed)
    for name, variable in flat_params(model).items():
        if skip_adapters and is_adapter(name):
            continue
        value = np.asarray(variable.get_value())
        variable.set_value(jnp.asarray(value + 0.1 * rng.standard_normal(value.shape), value.dtype))


def test_fresh_adapters_change_nothing_and_then_add_scale_x_a_b():
    plain, adapted = build_model(_dit_config(), 0), build_model(_dit_config(*LORA), 0)
    base = {name: variable for name, variable in flat_params(adapted).items() if not is_adapter(name)}
    assert base.keys() == flat_params(plain).keys()
    for name, variable in flat_params(plain).items():  # Same seed, same base: the adapters draw elsewhere.
        np.testing.assert_array_equal(base[name].get_value(), variable.get_value(), err_msg=name)
    paths = [path for path, _ in adapters(adapted)]
    assert paths == [f"blocks/attn{i}/to_{p}/lora" for i in (1, 2) for p in ("k", "out", "q", "v")]
    _move(plain)
    nnx.update(adapted, nnx.state(plain))
    x, t = _inputs()
    np.testing.assert_array_equal(_forward(adapted, x, t), _forward(plain, x, t))

    _move(adapted, seed=2)
    dense = adapted.blocks.attn1.to_q
    a, b = (np.asarray(v.get_value())[0] for v in (dense.lora.a, dense.lora.b))
    kernel, bias = np.asarray(dense.kernel.get_value())[0], np.asarray(dense.bias.get_value())[0]
    tokens = np.random.default_rng(3).standard_normal((5, kernel.shape[0])).astype(np.float32)
    graphdef, state = nnx.split(dense)  # The stacked layer; its first slice is block 0's.
    first = nnx.merge(graphdef, jax.tree.map(lambda v: v[0], state))
    expected = tokens @ kernel + bias + (8.0 / 4) * tokens @ a @ b
    np.testing.assert_allclose(np.asarray(first(tokens)), expected, rtol=1e-5, atol=1e-5)


def test_merged_weights_compute_what_the_adapters_do():
    config = _dit_config(*LORA)
    model = build_model(config, 0)
    _move(model)
    weights = {name: np.asarray(v.get_value()) for name, v in flat_params(model).items()}
    merged = merge_lora_params(weights, config.model.lora.alpha / config.model.lora.rank)
    assert not any(is_adapter(name) for name in merged)
    x, t = _inputs()
    plain = model_from_weights(without_lora(config), merged)
    np.testing.assert_allclose(_forward(plain, x, t), _forward(model, x, t), rtol=1e-4, atol=1e-5)


def _adapter_count(config) -> int:
    """rank * (in + out) per adapted projection: q, k, v, out of both attentions, in every block."""
    width = config.model.dit.num_attention_heads * config.model.dit.attention_head_dim
    return config.model.dit.num_layers * 8 * config.model.lora.rank * 2 * width


def _bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


VIDEO = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), np.uint8)


def _moved_state_and_step(config, parts):
    """A fresh LoRA state with every parameter moved (gradients then reach the adapters), and its jitted step."""
    state = jax.jit(lambda: parts.init_state(config))()
    model = nnx.merge(parts.graphdef, state.params, state.frozen)
    _move(model)
    _, params, frozen = nnx.split(model, trainable_filter(ADAPTER_PATTERN), ...)
    step = jax.jit(make_train_step(parts.graphdef, parts.formulation, parts.optimizer, config))
    return state.replace(params=params, frozen=frozen), step


def test_only_the_adapters_train_and_the_base_holds_no_optimizer_state():
    config = _dit_config(*LORA, "optim.warmup_steps=0")
    parts = build_run(config)
    abstract = parts.abstract_state
    trained = {name for name in flat_params(abstract.params)}
    assert trained and all(is_adapter(name) for name in trained)
    assert sum(x.size for x in jax.tree.leaves(abstract.params)) == _adapter_count(config)
    full = build_run(_dit_config()).abstract_state
    lora_bytes = _bytes((abstract.opt_state, abstract.ema))
    full_bytes = _bytes((full.opt_state, full.ema))
    print(f"optimizer state + EMA: LoRA {lora_bytes:,} B against full fine-tuning {full_bytes:,} B")
    assert lora_bytes * 5 < full_bytes

    state, step = _moved_state_and_step(config, parts)
    new, metrics = step(state, {"video": VIDEO})
    assert float(metrics["grad_norm"]) > 0
    for before, after in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(new.frozen), strict=True):
        np.testing.assert_array_equal(before, after)
    before, after = flat_params(state.params), flat_params(new.params)
    moved = {name for name in before if np.any(before[name].get_value() != after[name].get_value())}
    # Without text, cross-attention reads one zero token: its softmax is 1 whatever q and k, so they get no gradient.
    assert set(before) - moved == {f"blocks.attn2.to_{p}.lora.{m}" for p in "qk" for m in "ab"}


def test_dropout_keeps_the_expectation_and_draws_per_example():
    rate, keys = 0.25, jax.vmap(jax.random.PRNGKey)(jnp.arange(4))
    x = jnp.ones((8, 64, 32))  # 4 examples with 2 frames each folded into the rows.
    dropped = np.asarray(_dropout(x, keys, rate))
    kept = (dropped != 0).mean()
    sigma = np.sqrt(rate * (1 - rate) / dropped.size)
    assert abs(kept - (1 - rate)) < 5 * sigma, kept  # 5 sigma of the binomial: a false alarm 1 in ~3.5 million.
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / (1 - rate))}
    # Example 2 alone gets the mask it gets inside the batch; its two frames get different masks.
    alone = np.asarray(_dropout(x[4:6], keys[2:3], rate))
    np.testing.assert_array_equal(alone, dropped[4:6])
    assert np.any(alone[0] != alone[1])


def test_dropout_trains_the_adapters_differently_and_repeatably():
    losses = {}
    for rate in ("0.0", "0.5"):
        config = _dit_config(*LORA, f"model.lora.dropout={rate}")
        state, step = _moved_state_and_step(config, build_run(config))
        losses[rate] = [float(step(state, {"video": VIDEO})[1]["loss"]) for _ in range(2)]
    assert losses["0.5"][0] == losses["0.5"][1]  # Same state, same step: the same masks.
    assert losses["0.5"][0] != losses["0.0"][0]


def test_unet_adapters_on_its_attention_and_targets_that_match_nothing():
    config = fast_config(*LORA, "model.lora.targets=attn1/to_q$")
    params = build_run(config).abstract_state.params
    names = sorted(flat_params(params))
    assert names and all(name.endswith(("attn1.to_q.lora.a", "attn1.to_q.lora.b")) for name in names)
    with pytest.raises(ConfigError, match=r"^config key 'model.lora.targets': 'nothing' matches no linear layer"):
        build_run(fast_config(*LORA, "model.lora.targets=nothing"))


def test_wan_pipeline_loads_the_exported_adapters_and_computes_what_ours_does(tmp_path, monkeypatch):
    """The export holds the merged transformer and the adapters alone; diffusers' WanPipeline, given the base
    transformer, loads the adapters with load_lora_weights and then equals our adapted model."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    config, weights = _dit_run(tmp_path / "run", *TEXT_FREE, *LORA)
    export(weights, config, tmp_path / "lora", fmt="safetensors", dtype="float32")
    assert (tmp_path / "lora" / LORA_WEIGHTS_NAME).exists()
    base = {name: value for name, value in weights.items() if not is_adapter(name)}
    export(base, without_lora(config), tmp_path / "base", fmt="safetensors", dtype="float32")

    x, t = _inputs()
    text = np.zeros((2, 1, 1), np.float32)
    ours = np.asarray(_forward(model_from_weights(config, weights), x, t))
    merged, _ = _from_pretrained(tmp_path / "lora", monkeypatch)
    assert np.abs(_diffusers_forward(merged, x, t, text, None) - ours).max() < 1e-4 * np.abs(ours).max()

    transformer, _ = _from_pretrained(tmp_path / "base", monkeypatch)
    before = _diffusers_forward(transformer, x, t, text, None)
    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )  # fmt: skip
    pipe.load_lora_weights(str(tmp_path / "lora"))
    with torch.no_grad():
        after = _diffusers_forward(pipe.transformer, x, t, text, None)
    assert np.abs(before - ours).max() > 1e-2 * np.abs(ours).max()  # The adapters matter...
    assert np.abs(after - ours).max() < 1e-4 * np.abs(ours).max()  # ...and diffusers applies them as we do.
