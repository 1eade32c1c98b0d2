"""Fused attention kernels against XLA attention: splash in Pallas interpret mode on CPU (padding, causal,
cross lengths, gradients), under shard_map on 8 host devices and inside a caller's shard_map; a TPU AOT
compile through libtpu (splash custom call, nothing gathered); cuDNN on a GPU, where there is one.

GPU run (about 30 s on an H200; the conftest otherwise starts the CPU alone, and XLA's GEMM autotuning
would add about 25 s per shape):
    XLA_FLAGS=--xla_gpu_autotune_level=0 JAX_PLATFORMS=cuda pytest tests/models/test_attention_kernels.py -k cudnn
"""

import importlib.util
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.models import attention as attention_lib
from pyoco_jax.models.attention import attention, record_kernel_choices, xla_attention
from pyoco_jax.models.attention_target import kernel_target

F32 = jnp.float32
BATCH_AXES, HEAD_AXES = ("data", "fsdp"), ("tensor",)
LAYOUT = dict(batch_axes=BATCH_AXES, head_axes=HEAD_AXES)


def _qkv(batch, q_len, k_len, heads, head_dim, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    shapes = ((batch, q_len, heads, head_dim), (batch, k_len, heads, head_dim), (batch, k_len, heads, head_dim))
    return [jnp.asarray(rng.standard_normal(shape), dtype) for shape in shapes]


def _loss_and_grads(attend, q, k, v):
    """The attention output and the gradients of a loss that weighs every output element differently."""
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)

    def loss(q, k, v):
        out = attend(q, k, v)
        return (out.astype(jnp.float32) * weights).sum(), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def _assert_close(ours, reference, atol):
    out, grads = ours
    ref_out, ref_grads = reference
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32), atol=atol)
    for name, grad, ref in zip("qkv", grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(ref, np.float32), atol=atol, err_msg=name)


# Lengths that are not block multiples: causal with q and kv padded to a 256 block; cross-attention with only
# kv padded (three 128 blocks); causal with q padded and more keys than queries (bottom-right aligned).
@pytest.mark.parametrize("q_len, k_len, causal", [(200, 200, True), (256, 300, False), (100, 300, True)])
def test_splash_in_interpret_mode_equals_xla_forward_and_gradients(q_len, k_len, causal):
    q, k, v = _qkv(2, q_len, k_len, 2, 32)
    with kernel_target(platform="tpu", interpret=True), record_kernel_choices() as choices:
        ours = jax.jit(lambda *a: _loss_and_grads(lambda *x: attention(*x, causal=causal, backend="splash"), *a))(
            q, k, v
        )
    assert [c.kernel for c in choices] == ["splash"]
    reference = _loss_and_grads(lambda *x: xla_attention(*x, causal=causal), q, k, v)
    _assert_close(ours, reference, atol=2e-5)  # float32: only the summation order differs


def _mesh():
    devices = np.array(jax.devices()[:8]).reshape(2, 2, 2)
    return Mesh(devices, ("data", "fsdp", "tensor"))


def _sharded_inputs(mesh, *arrays):
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES, None, HEAD_AXES))
    return [jax.device_put(a, sharding) for a in arrays]


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (tests/conftest.py makes 8 host devices)")
def test_splash_under_shard_map_equals_unsharded_xla_and_gathers_nothing():
    mesh = _mesh()
    q, k, v = _sharded_inputs(mesh, *_qkv(4, 200, 200, 4, 32))
    attend = jax.jit(lambda *a: _loss_and_grads(lambda *x: attention(*x, causal=True, backend="splash"), *a))
    with kernel_target(platform="tpu", interpret=True, mesh=mesh, **LAYOUT):
        compiled = attend.lower(q, k, v).compile()
    _assert_close(compiled(q, k, v), _loss_and_grads(lambda *x: xla_attention(*x, causal=True), q, k, v), atol=2e-5)
    assert "all-gather" not in compiled.as_text()
    # Without the layout the kernel gets whole arrays: the same mesh now gathers them (so the check above can fail).
    with kernel_target(platform="tpu", interpret=True, mesh=mesh):
        gathered = jax.jit(lambda *x: attention(*x, backend="splash")).lower(q, k, v).compile().as_text()
    assert "all-gather" in gathered


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (tests/conftest.py makes 8 host devices)")
def test_attention_inside_a_callers_shard_map_runs_on_the_local_arrays(caplog):
    """The context-parallel contract: called inside shard_map, splash runs on this device's arrays (no nested
    shard_map over manual axes); under check_vma=True, whose output types splash lacks, it falls back, saying so."""
    mesh = _mesh()
    q, k, v = _sharded_inputs(mesh, *_qkv(4, 136, 136, 4, 32))
    spec = PartitionSpec(BATCH_AXES, None, HEAD_AXES)
    reference = xla_attention(q, k, v)
    attention_lib._logged.clear()
    for check_vma, kernel in ((False, "splash"), (True, "xla")):
        local = jax.shard_map(
            lambda *x: attention(*x, backend="splash"),
            mesh=mesh,
            in_specs=(spec,) * 3,
            out_specs=spec,
            check_vma=check_vma,
        )
        with kernel_target(platform="tpu", interpret=True, **LAYOUT), record_kernel_choices() as choices:
            with caplog.at_level(logging.WARNING):
                out = jax.jit(local)(q, k, v)
        assert [c.kernel for c in choices] == [kernel]
        np.testing.assert_allclose(out, reference, atol=2e-5)
    assert any("check_vma=False" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_tpu_aot_compile_of_sharded_attention_uses_the_splash_kernel():
    """Compiled, not run, for a v5p slice on this host: the platform comes from the mesh's (TPU) devices."""
    from pyoco_jax.train.plan import target

    mesh = Mesh(np.array(target("v5p:2x2x1").devices).reshape(2, 1, 2), ("data", "fsdp", "tensor"))
    spec = NamedSharding(mesh, PartitionSpec(BATCH_AXES, None, HEAD_AXES))
    q = jax.ShapeDtypeStruct((4, 1000, 8, 40), jnp.bfloat16, sharding=spec)  # SD-1.5's 32x32 latents, padded
    step = jax.jit(lambda *a: _loss_and_grads(lambda *x: attention(*x, backend="auto"), *a))
    with kernel_target(mesh=mesh, **LAYOUT), record_kernel_choices() as choices:
        compiled = step.trace(q, q, q).lower().compile()
    assert [(c.kernel, c.reason) for c in choices] == [("splash", "tpu, lengths 1000/1000, blocks 512/512")]
    hlo = compiled.as_text()
    assert hlo.count("tpu_custom_call") >= 3  # forward, dq and dkv kernels
    assert "all-gather" not in hlo


SD15_CASES = {  # (batch, q_len, k_len, heads, head_dim, causal, bias): SD-1.5 at 32x32 latents, 16 frames
    "spatial": (2, 1024, 1024, 8, 40, False, False),
    "temporal": (2, 16, 16, 8, 40, False, False),
    "temporal_bias": (2, 16, 16, 8, 40, False, True),  # relative frame positions
    "cross": (2, 1024, 77, 8, 40, False, False),  # odd length: padded by one
    "causal": (2, 1024, 1024, 8, 40, True, False),
}


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
@pytest.mark.parametrize("case", list(SD15_CASES))
@pytest.mark.parametrize("sharded", [False, True])
def test_cudnn_equals_xla_in_bfloat16_forward_and_gradients(case, sharded):
    batch, q_len, k_len, heads, head_dim, causal, with_bias = SD15_CASES[case]
    q, k, v = _qkv(batch, q_len, k_len, heads, head_dim, jnp.bfloat16)
    bias = jnp.asarray(np.random.default_rng(2).standard_normal((1, heads, q_len, k_len)), F32) if with_bias else None
    layout = dict(mesh=Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor")), **LAYOUT)
    attend = jax.jit(
        lambda *a: _loss_and_grads(lambda *x: attention(*x, bias=bias, causal=causal, backend="cudnn"), *a)
    )
    with kernel_target(**(layout if sharded else {})), record_kernel_choices() as choices:
        ours = attend(q, k, v)
        hlo = attend.lower(q, k, v).compile().as_text()
    assert [c.kernel for c in choices] == ["cudnn"] and "cudnn" in hlo.lower()
    if sharded:
        with kernel_target(**layout):
            assert "shard_map" in str(jax.make_jaxpr(lambda *x: attention(*x, backend="cudnn"))(q, k, v))
    # bfloat16 both ways: compare each against float32 XLA, allowing twice XLA-bf16's own error plus a little.
    with jax.default_matmul_precision("highest"):  # not TF32
        exact = _loss_and_grads(lambda *x: xla_attention(*x, bias, causal), *(a.astype(F32) for a in (q, k, v)))
    xla_bf16 = _loss_and_grads(lambda *x: xla_attention(*x, bias, causal), q, k, v)
    for name, ours_leaf, xla_leaf, exact_leaf in zip(
        ("out", "dq", "dk", "dv"), *(jax.tree.leaves(t) for t in (ours, xla_bf16, exact)), strict=True
    ):
        exact_leaf = np.asarray(exact_leaf, np.float32)
        ours_error = np.abs(np.asarray(ours_leaf, np.float32) - exact_leaf).max()
        xla_error = np.abs(np.asarray(xla_leaf, np.float32) - exact_leaf).max()
        print(f"{case} sharded={sharded} {name}: max error cuDNN {ours_error:.2e}, XLA bf16 {xla_error:.2e}")
        assert ours_error <= 2 * xla_error + 1e-3 * np.abs(exact_leaf).max(), (name, ours_error, xla_error)
