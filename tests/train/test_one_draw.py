"""`one_draw`: a function's random bits from one threefry stream, drawn in one kernel or where each lies.

Statistical checks: 20k-sample Kolmogorov-Smirnov tests at p > 1e-4 (a correct draw fails one in 10^4
runs; the seeds are fixed, so a pass is reproducible), and correlations between slices below 0.03 (5
standard errors of 1/sqrt(20000)).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend.random import threefry2x32_p
from jax.sharding import NamedSharding, PartitionSpec
from scipy import stats

from pyoco_jax.train import one_draw as one_draw_module
from pyoco_jax.train.one_draw import _counter_bits, one_draw

N = 20_000


def _draws():
    """Several widths, a scalar, a truncated normal and a draw nested in a jit."""
    keys = jax.random.split(jax.random.key(7), 6)
    return {
        "normal": jax.random.normal(keys[0], (N,)),
        "normal_again": jax.random.normal(keys[1], (100, N // 100)),
        "uniform": jax.random.uniform(keys[2], (N,)),
        "bf16": jax.random.normal(keys[3], (N,), jnp.bfloat16),
        "truncated": jax.jit(lambda k: jax.random.truncated_normal(k, -2.0, 2.0, (N,)))(keys[4]),
        "scalar": jax.random.uniform(keys[5], ()),
    }


def _calls(fn, primitive: str) -> list:
    """The params of every `primitive` in fn's jaxpr, nested ones included."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == primitive:
                found.append(eqn.params)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)().jaxpr)
    return found


def test_one_threefry_kernel_per_bit_width_replicated_and_one_per_draw_sharded():
    widths = [params["bit_width"] for params in _calls(_draws, "random_bits")]
    assert len(widths) == 6 and len(set(widths)) == 2  # bfloat16 draws fewer bits than float32.
    assert len(_calls(lambda: one_draw(_draws, 0), "threefry2x32")) == 2
    assert len(_calls(lambda: one_draw(_draws, 0, sharded=True), "threefry2x32")) == 6
    assert not _calls(lambda: one_draw(_draws, 0), "random_bits")


def test_chunks_bound_the_draws_memory_and_keep_its_values(monkeypatch):
    """64 draws of 4096 floats: one chunk needs 4 MiB of temporaries (4x the output), chunks of 4096 elements
    1.4 MiB (measured; the draws one by one: 1.1 MiB)."""

    def draws():
        return [jax.random.normal(k, (2**12,)) for k in jax.random.split(jax.random.key(0), 64)]

    def compiled():
        return jax.jit(lambda: one_draw(draws, 0)).lower().compile()

    whole = compiled()
    monkeypatch.setattr(one_draw_module, "CHUNK", 2**12)
    chunked = compiled()
    assert len(_calls(lambda: one_draw(draws, 0), "threefry2x32")) == 64
    assert chunked.memory_analysis().temp_size_in_bytes < 0.5 * whole.memory_analysis().temp_size_in_bytes
    for a, b in zip(whole(), chunked(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_draw_keeps_its_distribution_and_draws_are_independent():
    values = {name: np.asarray(x, np.float64).ravel() for name, x in one_draw(_draws, 0).items()}
    assert stats.kstest(values["normal"], "norm").pvalue > 1e-4
    assert stats.kstest(values["normal_again"], "norm").pvalue > 1e-4
    assert stats.kstest(values["uniform"], "uniform").pvalue > 1e-4
    assert stats.kstest(values["bf16"], "norm").statistic < 0.02  # bf16 rounding steps the CDF by < 1%.
    truncated = stats.truncnorm(-2.0, 2.0)
    assert stats.kstest(values["truncated"], truncated.cdf).pvalue > 1e-4
    assert 0.0 <= values["scalar"][0] < 1.0
    assert abs(np.corrcoef(values["normal"], values["normal_again"])[0, 1]) < 0.03
    assert abs(np.corrcoef(values["normal"], values["uniform"])[0, 1]) < 0.03


def test_seeds_give_different_streams_and_the_same_seed_the_same():
    first, again, other = (one_draw(_draws, seed)["normal"] for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert abs(np.corrcoef(first, other)[0, 1]) < 0.03


def test_computed_where_they_lie_the_values_are_the_same():
    flat = jax.jit(lambda: one_draw(_draws, 3))()
    counted = jax.jit(lambda: one_draw(_draws, 3, sharded=True))()
    for name in flat:
        np.testing.assert_array_equal(np.asarray(counted[name]), np.asarray(flat[name]), err_msg=name)


def test_counters_carry_into_the_high_word():
    """A slice starting just below 2**32 in its stream, against counters from numpy's uint64 arithmetic."""
    key = jax.random.key(0, impl="threefry2x32")
    start = 2**32 - 5
    got = np.asarray(_counter_bits(key, start, (2, 5), 32))
    counters = np.arange(start, start + 10, dtype=np.uint64).reshape(2, 5)
    high, low = (counters >> np.uint64(32)).astype(np.uint32), counters.astype(np.uint32)
    bits1, bits2 = threefry2x32_p.bind(*jax.random.key_data(key), jnp.asarray(high), jnp.asarray(low))
    np.testing.assert_array_equal(got, np.asarray(bits1 ^ bits2))
    assert high.tolist() == [[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    # Below the carry the same counters are what `jax.random.bits` uses for a flat stream.
    flat = np.asarray(jax.random.bits(key, (13,), jnp.uint32))
    np.testing.assert_array_equal(np.asarray(_counter_bits(key, 3, (2, 5), 32)), flat[3:].reshape(2, 5))


class _Stacked(nnx.Module):
    """Layers initialised under nnx.vmap (how the DiT stacks its blocks) beside a plain one."""

    def __init__(self, rngs: nnx.Rngs):
        @nnx.vmap(in_axes=0, out_axes=0)
        def layers(keys):
            return nnx.Linear(8, 8, rngs=nnx.Rngs(keys))

        self.layers = layers(jax.random.split(rngs.params(), 4))
        self.head = nnx.Linear(8, 3, rngs=rngs)


def test_a_model_initialised_in_one_draw_keeps_its_shapes_and_scales():
    params = nnx.state(one_draw(lambda: nnx.state(_Stacked(nnx.Rngs(0))), 0))
    reference = nnx.state(_Stacked(nnx.Rngs(0)))
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
    stacked = np.asarray(params["layers"]["kernel"][...])
    assert len({layer.tobytes() for layer in stacked}) == 4  # Each layer its own slice.
    # lecun_normal on fan-in 8: std 1/sqrt(8) after truncating a normal to +-2 of its scale, 1/sqrt(8)/0.8796.
    assert np.abs(stacked).max() <= 2 / np.sqrt(8) / 0.8796 * 1.0001
    assert 0.8 / np.sqrt(8) < stacked.std() < 1.2 / np.sqrt(8)


def test_sharded_output_is_computed_in_place_without_collectives():
    mesh = jax.make_mesh((8,), ("x",))
    sharding = {name: NamedSharding(mesh, PartitionSpec()) for name in _draws()}
    sharding["normal_again"] = NamedSharding(mesh, PartitionSpec(None, "x"))
    sharding["normal"] = NamedSharding(mesh, PartitionSpec("x"))
    compiled = jax.jit(lambda: one_draw(_draws, 5, sharded=True), out_shardings=sharding).lower().compile()
    text = compiled.as_text()
    assert not any(op in text for op in ("all-gather", "all-to-all", "collective-permute", "all-reduce"))
    replicated = jax.jit(lambda: one_draw(_draws, 5))()
    for name, value in compiled().items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(replicated[name]), err_msg=name)


def test_one_draw_leaves_control_flow_draws_alone():
    def scanned():
        def body(key, _):
            key, sub = jax.random.split(key)
            return key, jax.random.normal(sub, (16,))

        return jax.lax.scan(body, jax.random.key(0), None, length=3)[1]

    np.testing.assert_array_equal(np.asarray(one_draw(scanned, 0)), np.asarray(scanned()))


@pytest.mark.parametrize("sharded", [False, True])
def test_fresh_state_values_come_from_the_one_draw(sharded):
    from pyoco_jax.config import load_config
    from pyoco_jax.train.build import build_run, fresh_state

    config = load_config("configs/tiny.py", reads_data=False)
    parts = build_run(config)
    state = jax.jit(lambda: parts.init_state(config, sharded))()
    assert not _calls(lambda: parts.init_state(config, sharded), "random_bits")
    per_parameter = len(_calls(lambda: fresh_state(config, parts.optimizer), "random_bits"))
    assert len(_calls(lambda: parts.init_state(config, sharded), "threefry2x32")) == (per_parameter if sharded else 1)
    assert jax.tree.map(jnp.shape, state) == jax.tree.map(jnp.shape, parts.abstract_state)
