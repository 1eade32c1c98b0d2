"""Everything a run derives from its config alone: model structure, diffusion, optimizer, state layout.

Shared by training, sampling and export so they agree on the state they read.
"""

import dataclasses

import jax
import ml_collections
import optax
from flax import nnx

from pyoco_jax.diffusion import make_formulation
from pyoco_jax.models.unet import VideoUNet
from pyoco_jax.train.optimizer import make_optimizer
from pyoco_jax.train.state import TrainState, create_train_state, split_model


def build_model(config: ml_collections.ConfigDict, seed: int) -> VideoUNet:
    """A freshly initialised video U-Net (pretrained weights are merged in after init, on the host)."""
    return VideoUNet(config.model, num_frames=config.data.num_frames, rngs=nnx.Rngs(seed))


@dataclasses.dataclass(frozen=True)
class RunParts:
    graphdef: nnx.GraphDef
    formulation: object
    optimizer: optax.GradientTransformation
    abstract_state: TrainState

    def init_state(self, config: ml_collections.ConfigDict) -> TrainState:
        """A fresh state; call under jit with out_shardings to create it sharded."""
        model = build_model(config, config.seed)
        return create_train_state(model, self.optimizer, config.optim.trainable, config.seed)[1]


def build_run(config: ml_collections.ConfigDict) -> RunParts:
    optimizer = make_optimizer(config.optim, int(config.train.num_steps))
    abstract_model = nnx.eval_shape(lambda: build_model(config, config.seed))
    graphdef, _, _ = split_model(abstract_model, config.optim.trainable)
    parts = RunParts(graphdef, make_formulation(config.diffusion), optimizer, None)
    abstract_state = jax.eval_shape(lambda: parts.init_state(config))
    return dataclasses.replace(parts, abstract_state=abstract_state)
