"""Parameter initialisation keys that stay cheap to draw while tracing.

`nnx.Rngs` advances a counter Variable on every draw; under a trace (jit-compiled init,
`nnx.eval_shape`) each advance costs time linear in the trace so far, which made building
an SD-sized U-Net quadratic (about 15 s just to trace). `ParamKeys` draws one key from the
Rngs and folds in a Python counter instead. Layers accept either (`rngs.params()`).
"""

from typing import Protocol

import jax
from flax import nnx


class KeySource(Protocol):
    """Anything with `params() -> key`: an `nnx.Rngs` or a `ParamKeys`."""

    def params(self) -> jax.Array: ...


class ParamKeys:
    """`params()` returns fold_in(base, 1), fold_in(base, 2), ...; deterministic in `rngs`'s seed."""

    def __init__(self, rngs: nnx.Rngs):
        self._base = rngs.params()
        self._count = 0

    def params(self) -> jax.Array:
        self._count += 1
        return jax.random.fold_in(self._base, self._count)
