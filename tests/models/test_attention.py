"""Attention backends: xla matches a naive reference; unavailable backends fall back with one log line."""

import logging

import jax
import numpy as np
import pytest

from pyoco_jax.models import attention as attention_lib

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
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU fallback")
    attention_lib._warned.clear()
    q, k, v, _ = _qkv()
    with caplog.at_level(logging.WARNING):
        out = attention_lib.attention(q, k, v, causal=True, backend=backend)
        attention_lib.attention(q, k, v, causal=True, backend=backend)
    lines = [r.getMessage() for r in caplog.records if "using 'xla' instead" in r.getMessage()]
    assert len(lines) == 1 and backend in lines[0]
    np.testing.assert_allclose(out, _naive(q, k, v, causal=True), atol=1e-5)


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
