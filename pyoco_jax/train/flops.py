"""FLOPs of a training step counted from its traced program, for MFU in the plans and the training log.

XLA's cost analysis counts a loop's body once, so for a model whose layers run under `jax.lax.scan` (the
DiT's `scan_layers`) it misses all layers but one; counting the matmuls of the jaxpr, scan bodies times
their length, does not. Model FLOPs are those of the step without remat: forward and backward once,
what MFU divides by.
"""

import math

import ml_collections
import numpy as np
from jax.extend import core as jax_core
from jax.sharding import Mesh

from pyoco_jax.train.build import build_run, sharded_step


def _sub_jaxprs(params: dict):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax_core.Jaxpr):
                yield item


def matmul_flops(jaxpr, *, kernels: bool = True) -> float:
    """FLOPs of the matrix products (dot_general, convolutions) that `jaxpr` (a Jaxpr or ClosedJaxpr) runs.

    A scan's body counts `length` times, a cond its costliest branch, nested calls (jit, remat with its
    recomputation, custom derivatives) fully, a Pallas kernel's body once per grid cell (blocks a kernel
    skips, e.g. masked out, included; `kernels=False` leaves kernels out, as XLA's cost analysis does), a
    shard_map's body once per device it runs on (it holds one device's share), a while loop's body once (its
    trip count is not static).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            per_output = math.prod(rhs) // rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
        else:
            inner = [matmul_flops(sub, kernels=kernels) for sub in _sub_jaxprs(eqn.params)]
            if name == "cond":
                total += max(inner, default=0.0)
            elif name == "pallas_call":
                total += sum(inner) * math.prod(eqn.params["grid_mapping"].grid) if kernels else 0.0
            elif name == "shard_map":  # The body is one device's share: every device of its new manual axes runs it.
                mesh = eqn.params["mesh"]
                total += sum(inner) * math.prod(mesh.shape[axis] for axis in eqn.params["newly_manual_axes"])
            else:
                total += sum(inner) * (eqn.params["length"] if name == "scan" else 1)
    return total


def step_model_flops(config: ml_collections.ConfigDict, mesh: Mesh, example: dict[str, np.ndarray]) -> float:
    """Matmul FLOPs (all devices) of one training step of `config` without remat and with plain attention, traced
    on `mesh` for batches stacked from `example`; nothing is compiled or allocated."""
    plain = config.copy_and_resolve_references()
    plain.model.remat = "none"
    plain.model.attention_backend = "xla"  # The same math; a fused kernel's custom call hides its matmuls.
    parts = build_run(plain)
    step = sharded_step(parts, plain, mesh, example, null_context=example.get("context"))
    state, batch = step.abstract_inputs(parts.abstract_state, example, config.data.global_batch_size)
    return matmul_flops(step.fn.trace(state, batch).jaxpr)
