"""Everything a run derives from its config alone: model structure, diffusion, optimizer, state layout.

Shared by training, sampling and export so they agree on the state they read.
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from pyoco_jax import parallel
from pyoco_jax.diffusion import make_formulation
from pyoco_jax.errors import ConfigError
from pyoco_jax.models.dit import WanTransformer, dit_from_config
from pyoco_jax.models.lora import add_lora, lora_spec, trainable_pattern
from pyoco_jax.models.unet import VideoUNet
from pyoco_jax.train.one_draw import one_draw
from pyoco_jax.train.optimizer import make_optimizer, path_mask
from pyoco_jax.train.state import TrainState, create_train_state, split_model
from pyoco_jax.train.step import make_train_step

# model.backbone: the video U-Net (models/unet) | the Wan-class video transformer (models/dit).
BACKBONES = ("unet", "dit")
Backbone = VideoUNet | WanTransformer


def build_model(config: ml_collections.ConfigDict, seed: int) -> Backbone:
    """A freshly initialised `model.backbone`, with LoRA adapters if `model.lora.rank` > 0 (pretrained
    weights are merged in after init, on the host).

    Both take the same keyword call, `model(x, t, context=, labels=, fps=, condition=, augmentation=)`;
    what the DiT lacks (fps, condition) the config refuses before this is built.
    """
    if config.model.backbone == "dit":
        model = dit_from_config(config.model, rngs=nnx.Rngs(seed))
    else:
        model = VideoUNet(config.model, num_frames=config.data.num_frames, rngs=nnx.Rngs(seed))
    spec = lora_spec(config.model)
    if spec is not None:
        add_lora(model, spec, seed)
    return model


@dataclasses.dataclass(frozen=True)
class RunParts:
    graphdef: nnx.GraphDef
    formulation: object
    optimizer: optax.GradientTransformation
    abstract_state: TrainState

    def init_state(self, config: ml_collections.ConfigDict, sharded: bool = False) -> TrainState:
        """A fresh state, its random values from one threefry stream in a few kernels (`one_draw`); call under jit.

        `sharded`: for out_shardings that split the state; each value computed where it lies, the same values.
        """
        return one_draw(lambda: fresh_state(config, self.optimizer), config.seed, sharded)

    def create_state(self, config: ml_collections.ConfigDict, state_sharding: TrainState) -> TrainState:
        """A fresh state laid out as `state_sharding`."""
        sharded = not all(s.is_fully_replicated for s in jax.tree.leaves(state_sharding))
        return jax.jit(lambda: self.init_state(config, sharded), out_shardings=state_sharding)()


def fresh_state(config: ml_collections.ConfigDict, optimizer: optax.GradientTransformation) -> TrainState:
    """The state as the model's initialisers draw it: one random kernel per parameter."""
    return create_train_state(build_model(config, config.seed), optimizer, trainable_pattern(config), config.seed)[1]


def build_run(config: ml_collections.ConfigDict) -> RunParts:
    optimizer = make_optimizer(config.optim, int(config.train.num_steps))
    abstract_model = nnx.eval_shape(lambda: build_model(config, config.seed))
    graphdef, _, _ = split_model(abstract_model, trainable_pattern(config))
    abstract_state = jax.eval_shape(lambda: fresh_state(config, optimizer))
    _check_lr_scale_pattern(config.optim, abstract_state.params)
    return RunParts(graphdef, make_formulation(config.diffusion), optimizer, abstract_state)


def _check_lr_scale_pattern(optim: ml_collections.ConfigDict, params: nnx.State) -> None:
    if optim.lr_scale != 1.0 and not any(jax.tree.leaves(path_mask(optim.lr_scale_pattern)(params))):
        raise ConfigError(
            f"optim.lr_scale={optim.lr_scale} applies to no trained parameter: optim.lr_scale_pattern="
            f"{optim.lr_scale_pattern!r} matches no path; check the regex (paths look like "
            "'down_blocks/1/temporal_attentions/0/attn/to_out/kernel')."
        )


def check_batch(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """The micro-batch must split evenly over the mesh's data-parallel devices."""
    data_parallel = parallel.data_parallel_size(mesh)
    micro_batch = config.data.global_batch_size // config.optim.accum_steps
    if micro_batch % data_parallel:
        raise ConfigError(
            f"data.global_batch_size / optim.accum_steps = {micro_batch} clips per micro-batch cannot be split "
            f"over {data_parallel} data-parallel devices (mesh data x fsdp); make it a multiple of {data_parallel}."
        )


@dataclasses.dataclass(frozen=True)
class ShardedStep:
    """The jitted train step with the shardings it was built for (state in and out, batch in)."""

    fn: Callable
    state_sharding: TrainState
    batch_sharding: dict

    def abstract_inputs(self, abstract_state: TrainState, example: Mapping, batch_size: int) -> tuple:
        """(state, batch) ShapeDtypeStructs carrying the shardings: what `fn.lower` takes for AOT."""
        state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, self.state_sharding
        )
        batch = {}
        for name, sharding in self.batch_sharding.items():
            value = np.asarray(example[name])
            batch[name] = jax.ShapeDtypeStruct((batch_size, *value.shape), value.dtype, sharding=sharding)
        return state, batch


def sharded_step(
    parts: RunParts,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    example: Mapping,
    null_context: np.ndarray | None = None,
) -> ShardedStep:
    """The training step jitted on `mesh`: state laid out by `config.mesh.rules`, donated; batches as
    stacked from `example` (one example of the data source), rows over the data axes."""
    check_batch(config, mesh)
    state_sharding = parallel.state_shardings(parts.abstract_state, mesh, parallel.logical_rules(config.mesh))
    batch_sharding = parallel.batch_shardings(mesh, example)
    fn = jax.jit(
        make_train_step(parts.graphdef, parts.formulation, parts.optimizer, config, mesh, null_context),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, parallel.replicated(mesh)),
        donate_argnums=0,
    )
    return ShardedStep(fn, state_sharding, batch_sharding)
