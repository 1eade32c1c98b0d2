"""Records what a model is called with inside a jitted sampler, so sampler states can be compared step by step.

A sampler's loop is one `lax.scan`; its states are seen where it calls the model. diffusers' schedulers
call the model on the very state they step from, so the recorded inputs are theirs, one per call.
"""

import jax
import numpy as np


def recording(model_fn):
    """(wrapped model_fn, calls): every call appends (x_in, t) as float64 NumPy arrays, in call order."""
    calls = []

    def record(x, t):
        calls.append((np.asarray(x, np.float64), np.asarray(t, np.float64)))

    def wrapped(x, t):
        jax.debug.callback(record, x, t, ordered=True)
        return model_fn(x, t)

    return wrapped, calls
