"""The sample section reaches the formulation's sampler: sample.unipc_order among its options."""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.sample.sampler import make_sampler
from tests.train.helpers import fast_config


class _Recording:
    """A formulation that records the options it is asked to sample with."""

    def __init__(self):
        self.options = {}

    def sample(self, model_fn, key, shape, **options):
        self.options = options
        return jnp.zeros(shape)


def test_unipc_order_reaches_the_formulation():
    config = fast_config("sample.sampler=unipc", "sample.unipc_order=3")
    graphdef, params = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    formulation = _Recording()
    sampler = make_sampler(graphdef, formulation, config, 5)
    sampler(params, nnx.State({}), jax.random.PRNGKey(0), None, None, num=1, guidance_scale=1.0)
    assert formulation.options["unipc_order"] == 3
    assert (formulation.options["sampler"], formulation.options["num_steps"]) == ("unipc", 5)
