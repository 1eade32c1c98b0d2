"""Attention: xla matches a naive reference; the kernel chosen per platform and shape (logged once, recorded);
explicit backends that cannot run fall back with one log line. The kernels themselves: test_attention_kernels.py."""

import logging

import jax
import numpy as np
import pytest

from pyoco_jax.models import attention as attention_lib
from pyoco_jax.models.attention_choice import FUSED_MIN_LENGTH, KernelChoice, choose_kernel
from pyoco_jax.models.attention_splash import block_size, splash_blocks
from pyoco_jax.models.attention_target import kernel_target, target_platform

_attend = jax.jit(attention_lib.attention, static_argnames=("causal", "backend"))


def _naive(q, k, v, bias=None, causal=False):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, lq, h, d = q.shape
    out = np.zeros_like(q)
    for i in range(b):
        for j in range(h):
            logits = q[i, :, j] @ k[i, :, j].T / np.sqrt(d)
            if bias is not None:
                logits = logits + np.broadcast_to(np.asarray(bias), (b, h, lq, k.shape[1]))[i, j]
            if causal:
                logits = np.where(np.tril(np.ones_like(logits, dtype=bool)), logits, -np.inf)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            out[i, :, j] = (weights / weights.sum(-1, keepdims=True)) @ v[i, :, j]
    return out


def _qkv(lq=6, lk=6):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, lq, 3, 8), np.float32)
    k, v = (rng.standard_normal((2, lk, 3, 8), np.float32) for _ in range(2))
    return q, k, v, rng.standard_normal((1, 3, lq, lk), np.float32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_xla_matches_naive_reference(causal, with_bias):
    q, k, v, bias = _qkv()
    bias = bias if with_bias else None
    out = _attend(q, k, v, bias=bias, causal=causal, backend="xla")
    np.testing.assert_allclose(out, _naive(q, k, v, bias, causal), atol=1e-5)


def test_cross_attention_lengths():
    q, k, v, _ = _qkv(lq=4, lk=9)
    np.testing.assert_allclose(_attend(q, k, v), _naive(q, k, v), atol=1e-5)


@pytest.mark.parametrize("backend", ["cudnn", "splash"])
def test_unavailable_backend_falls_back_with_one_log_line(backend, caplog):
    attention_lib._logged.clear()
    q, k, v, _ = _qkv()
    with kernel_target(platform="cpu"), caplog.at_level(logging.WARNING):
        out = attention_lib.attention(q, k, v, causal=True, backend=backend)
        attention_lib.attention(q, k, v, causal=True, backend=backend)
    lines = [r.getMessage() for r in caplog.records if "using 'xla' instead" in r.getMessage()]
    assert len(lines) == 1 and f"{backend} unavailable: the platform is cpu" in lines[0]
    np.testing.assert_allclose(out, _naive(q, k, v, causal=True), atol=1e-5)


BF16, F32 = jax.numpy.bfloat16, jax.numpy.float32
SPATIAL, TEMPORAL, TEXT = (32, 1024, 8, 40), (2048, 16, 8, 40), (32, 77, 8, 40)  # SD-1.5, 32x32 latents, 16 frames
WAN_720P = (1, 75_600, 40, 128)


@pytest.mark.parametrize(
    "platform, q_shape, k_shape, dtype, options, expected",
    [
        ("tpu", SPATIAL, SPATIAL, BF16, {}, ("splash", "tpu, lengths 1024/1024, blocks 512/512")),
        ("tpu", WAN_720P, WAN_720P, BF16, {}, ("splash", "tpu, lengths 75600/75600, blocks 512/512")),
        ("tpu", (1, 600, 8, 64), (1, 600, 8, 64), F32, {}, ("splash", "tpu, lengths 600/600, blocks 128/128")),
        ("tpu", TEMPORAL, TEMPORAL, BF16, {}, ("xla", f"length 16 < {FUSED_MIN_LENGTH}")),
        ("tpu", SPATIAL, TEXT, BF16, {}, ("xla", f"length 77 < {FUSED_MIN_LENGTH}")),
        ("tpu", SPATIAL, SPATIAL, BF16, {"bias": True}, ("xla", "an additive bias")),
        ("tpu", SPATIAL, (32, 256, 8, 40), BF16, {"causal": True}, ("xla", "causal with more queries than keys")),
        ("tpu", (1, 400_000, 8, 128), (1, 400_000, 8, 128), BF16, {}, ("xla", "does not fit in SMEM")),
        ("tpu", SPATIAL, SPATIAL, BF16, {"typed_manual": True}, ("xla", "pass check_vma=False")),
        ("tpu", SPATIAL, SPATIAL, BF16, {"unplaced_devices": 1}, ("splash", "tpu, lengths 1024/1024")),
        ("tpu", SPATIAL, SPATIAL, BF16, {"unplaced_devices": 8}, ("xla", "8 devices and no mesh in context")),
        ("gpu", SPATIAL, SPATIAL, BF16, {}, ("cudnn", "gpu, lengths 1024/1024")),
        ("gpu", SPATIAL, SPATIAL, BF16, {"causal": True}, ("cudnn", "gpu, lengths 1024/1024")),
        ("gpu", SPATIAL, SPATIAL, F32, {}, ("xla", "set model.dtype=bfloat16")),
        ("gpu", (8, 256, 8, 160), (8, 256, 8, 160), BF16, {}, ("xla", "head_dim a multiple of 8 up to 128, got 160")),
        ("gpu", (8, 256, 8, 64), (8, 512, 8, 64), BF16, {"causal": True}, ("xla", "aligns causal masks top-left")),
        ("gpu", TEMPORAL, TEMPORAL, BF16, {}, ("xla", f"length 16 < {FUSED_MIN_LENGTH}")),
        ("cpu", SPATIAL, SPATIAL, BF16, {}, ("xla", "no fused kernel on cpu")),
    ],
)
def test_auto_picks_the_kernel_from_platform_and_shapes(platform, q_shape, k_shape, dtype, options, expected):
    choice = choose_kernel("auto", platform, q_shape, k_shape, dtype, **options)
    assert choice.kernel == expected[0] and expected[1] in choice.reason, choice


def test_explicit_backends_are_kept_where_they_run():
    assert choose_kernel("xla", "tpu", SPATIAL, SPATIAL, BF16) == KernelChoice("xla", "requested")
    # An explicit splash serves what auto would not: 16 frames (padded to one 128 block).
    assert choose_kernel("splash", "tpu", TEMPORAL, TEMPORAL, BF16).reason == "tpu, lengths 16/16, blocks 128/128"
    assert choose_kernel("cudnn", "gpu", SPATIAL, SPATIAL, BF16, bias=True).kernel == "cudnn"
    assert choose_kernel("splash", "tpu", SPATIAL, SPATIAL, BF16, bias=True).reason.startswith("splash unavailable")


def test_splash_blocks_grow_to_512_where_padding_stays_small_and_the_block_table_fits():
    assert [block_size(n) for n in (16, 200, 256, 600, 1000, 1300, 4096, 75_600)] == [
        128,
        256,
        256,
        128,
        512,
        512,
        512,
        512,
    ]
    assert splash_blocks(75_600, 512) == (512, 512)
    assert splash_blocks(200_000, 200_000) == (512, 512)  # 391 x 391 blocks: 448 KiB of table
    assert splash_blocks(220_000, 220_000) is None  # 430 x 430: past half of the 1 MiB SMEM


def test_auto_choice_is_logged_once_and_recorded_per_call(caplog):
    attention_lib._logged.clear()
    q, k, v, _ = _qkv()
    with caplog.at_level(logging.INFO), attention_lib.record_kernel_choices() as choices:
        for _ in range(3):
            out = attention_lib.attention(q, k, v, backend="auto")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention")]
    assert lines == [f"attention (backend 'auto'): xla kernel, length 6 < {FUSED_MIN_LENGTH}"]
    assert choices == {KernelChoice("xla", f"length 6 < {FUSED_MIN_LENGTH}"): 3}
    np.testing.assert_allclose(out, _naive(q, k, v), atol=1e-5)


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 devices (tests/conftest.py makes 8 host devices)")
def test_the_target_platform_is_the_meshs_unless_set():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    assert target_platform() == jax.default_backend()
    with jax.set_mesh(mesh):
        assert target_platform() == "cpu"
    with kernel_target(mesh=mesh, platform="tpu"):
        assert target_platform() == "tpu"
    with pytest.raises(ValueError, match="not one of"):
        with kernel_target(platform="cuda"):
            pass


def test_unknown_backend_is_an_error():
    q, k, v, _ = _qkv()
    with pytest.raises(ValueError, match="attention_backend"):
        attention_lib.attention(q, k, v, backend="flash")


def test_bfloat16_attention_runs_every_matmul_in_bfloat16_forward_and_backward():
    """Only the softmax is float32: a float32 matmul in the backward would double its cost on accelerators."""
    q, k, v = (jax.numpy.asarray(a, jax.numpy.bfloat16) for a in _qkv()[:3])

    def loss(q, k, v):
        return attention_lib.xla_attention(q, k, v, causal=True).astype(np.float32).sum()

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 6  # Two forward, four backward.
    for eqn in dots:
        assert [var.aval.dtype for var in eqn.invars] == [jax.numpy.bfloat16] * 2, eqn
