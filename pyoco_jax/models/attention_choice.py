"""Which kernel serves one attention call: a pure function of the backend asked for, platform and shapes.

Backends (`model.attention_backend`):
    auto    per call, the rules below (the default).
    xla     plain einsum + float32 softmax; runs everywhere (the reference).
    cudnn   cuDNN flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`) on NVIDIA GPUs.
    splash  Pallas splash attention on TPU (attention_splash.py), any lengths.
An explicit cudnn or splash that cannot run a call falls back to xla, saying why.

auto:
    - an additive bias (relative frame positions, T5 buckets) -> xla: splash takes none, and the biased
      calls here are short anyway (16 frames, text tokens). An explicit cudnn takes a bias.
    - either length below FUSED_MIN_LENGTH (128) -> xla. A fused kernel pays by never writing the
      (Lq, Lk) logits to memory; with fewer than 128 keys a row of logits is no bigger than the q, k, v
      rows every kernel moves, so there is little to save, while splash pads each length to 128 lanes
      (temporal attention over 16 frames would compute 64x its logits). So temporal attention and
      77-token text cross-attention take xla; spatial attention at 16x16 latents and up (256+ tokens),
      Wan's self-attention and its 512-token text cross-attention take the fused kernel.
    - tpu -> splash (unless its block table cannot fit); gpu -> cudnn if bfloat16/float16 and head_dim a
      multiple of 8 up to 128; anything else -> xla.
    - causal with Lq > Lk (rows with no key) -> xla; cuDNN also for any Lq != Lk (it aligns causal masks
      top-left, `xla_attention` bottom-right).
    - several devices but no mesh to place the kernel on -> xla: the kernel would be handed whole
      (gathered) arrays and repeat the whole batch's attention on every device.
    - splash inside `shard_map(check_vma=True)` -> xla: the kernel gives its outputs no varying-axes type.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from pyoco_jax.models.attention_splash import splash_blocks

BACKENDS = ("auto", "xla", "cudnn", "splash")
FUSED_MIN_LENGTH = 128
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every cuDNN-9 GPU


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    kernel: str  # xla | cudnn | splash
    reason: str  # why, in a few words (logged once, counted in plans)


def _cudnn_problem(platform: str, q_shape: Sequence[int], k_shape: Sequence[int], dtype, causal: bool) -> str | None:
    if platform != "gpu":
        return f"the platform is {platform}, not gpu"
    if np.dtype(dtype).name not in CUDNN_DTYPES:
        return f"cuDNN needs bfloat16/float16 inputs, got {np.dtype(dtype).name} (set model.dtype=bfloat16)"
    head_dim = q_shape[-1]
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return f"cuDNN needs head_dim a multiple of 8 up to {CUDNN_MAX_HEAD_DIM}, got {head_dim}"
    if causal and q_shape[1] != k_shape[1]:
        return f"cuDNN aligns causal masks top-left, ours bottom-right, for lengths {q_shape[1]}/{k_shape[1]}"
    return None


def _splash_problem(
    platform: str, q_shape: Sequence[int], k_shape: Sequence[int], bias: bool, causal: bool, typed_manual: bool
) -> str | None:
    if platform != "tpu":
        return f"the platform is {platform}, not tpu"
    if typed_manual:
        return "called inside shard_map(check_vma=True), whose output types splash does not give; pass check_vma=False"
    if bias:
        return "splash takes no additive bias (e.g. relative frame positions)"
    if causal and q_shape[1] > k_shape[1]:
        return f"causal with more queries than keys ({q_shape[1]}/{k_shape[1]}) leaves rows with no key"
    if splash_blocks(q_shape[1], k_shape[1]) is None:
        return f"splash's block table for lengths {q_shape[1]}/{k_shape[1]} does not fit in SMEM"
    return None


def _choose_fused(
    kernel: str, platform: str, q_shape, k_shape, dtype, bias, causal, typed_manual
) -> KernelChoice | str:
    """The fused `kernel`'s choice, or the reason it cannot run this call."""
    if kernel == "cudnn":
        problem = _cudnn_problem(platform, q_shape, k_shape, dtype, causal)
    else:
        problem = _splash_problem(platform, q_shape, k_shape, bias, causal, typed_manual)
    if problem is not None:
        return problem
    detail = f"{platform}, lengths {q_shape[1]}/{k_shape[1]}"
    if kernel == "splash":
        detail += ", blocks {}/{}".format(*splash_blocks(q_shape[1], k_shape[1]))
    return KernelChoice(kernel, detail)


def choose_kernel(
    backend: str,
    platform: str,
    q_shape: Sequence[int],
    k_shape: Sequence[int],
    dtype,
    *,
    bias: bool = False,
    causal: bool = False,
    typed_manual: bool = False,
    unplaced_devices: int = 0,
) -> KernelChoice:
    """The kernel for q (B, Lq, H, D) over k (B, Lk, H, D) in `dtype` on `platform` (cpu | gpu | tpu).

    `typed_manual`: q varies over manual mesh axes of a `shard_map(check_vma=True)` (see `_splash_problem`).
    `unplaced_devices`: how many devices the process has when no mesh is in context (0: a mesh is).
    """
    if backend not in BACKENDS:
        raise ValueError(f"model.attention_backend={backend!r} is not one of {BACKENDS}")
    if backend == "xla":
        return KernelChoice("xla", "requested")
    if backend != "auto":
        choice = _choose_fused(backend, platform, q_shape, k_shape, dtype, bias, causal, typed_manual)
        return choice if isinstance(choice, KernelChoice) else KernelChoice("xla", f"{backend} unavailable: {choice}")
    if bias:
        return KernelChoice("xla", "an additive bias")
    shortest = min(q_shape[1], k_shape[1])
    if shortest < FUSED_MIN_LENGTH:
        return KernelChoice("xla", f"length {shortest} < {FUSED_MIN_LENGTH}")
    kernel = {"tpu": "splash", "gpu": "cudnn"}.get(platform)
    if kernel is None:
        return KernelChoice("xla", f"no fused kernel on {platform}")
    if unplaced_devices > 1:
        return KernelChoice(
            "xla",
            f"{unplaced_devices} devices and no mesh in context: {kernel} would get whole arrays on each; "
            "trace inside kernel_target(mesh=...) (models/attention_target.py)",
        )
    choice = _choose_fused(kernel, platform, q_shape, k_shape, dtype, bias, causal, typed_manual)
    return choice if isinstance(choice, KernelChoice) else KernelChoice("xla", choice)
