"""Fine-tuning MagicVideo's VideoVAE on video: SD's VAE decoder plus temporal layers, encoder frozen.

    from pyoco_jax.config import load_config
    from pyoco_jax.train.video_vae import finetune_video_vae
    config = load_config("configs/video_vae.py", ["vae.path=/path/to/stable-diffusion/vae"])
    finetune_video_vae(config, "runs/video_vae")

Reads `vae.*` (weights, temporal layers, loss, optimizer, steps), `data.*` (the clips), `mesh.*`
and `seed`. Writes the VideoVAE to `<workdir>/video_vae/` (`video_vae_checkpoint.load_video_vae`
reads it back) and the loss to `<workdir>/metrics.jsonl` and TensorBoard. Checkpoints (the trained params,
optimizer state, step, RNG, data iterator state and config) go to `<workdir>/checkpoints/` as the
U-Net trainer's do, and a rerun on the same workdir resumes from them.
"""

import math

import jax
import ml_collections
from absl import logging
from etils import epath
from flax import nnx

from pyoco_jax import parallel
from pyoco_jax.config import ConfigError, validate
from pyoco_jax.convert.vae import load_vae
from pyoco_jax.data.loader import make_loader, make_source
from pyoco_jax.models.vae.video import TRAINABLE_PARTS, TemporalDecoderSpec, VideoVAE, video_vae_from_image
from pyoco_jax.train.checkpoint import Checkpointer, abstract_like
from pyoco_jax.train.metrics import MetricLogger
from pyoco_jax.train.preemption import PreemptionWatch
from pyoco_jax.train.state import trainable_filter
from pyoco_jax.train.video_vae_checkpoint import save_video_vae
from pyoco_jax.train.video_vae_step import init_video_vae_state, make_video_vae_optimizer, make_video_vae_step

OUTPUT = "video_vae"


def temporal_spec(vae: ml_collections.ConfigDict) -> TemporalDecoderSpec:
    """The VideoVAE's temporal layers from the `vae` config section."""
    return TemporalDecoderSpec(
        conv=bool(vae.temporal_conv),
        attention=bool(vae.temporal_attention),
        num_heads=int(vae.temporal_num_heads),
        position_encoding=vae.temporal_position_encoding,
    )


def _check(config: ml_collections.ConfigDict) -> None:
    validate(config)
    vae = config.vae
    if not vae.path:
        raise ConfigError("config key 'vae.path': set it to a diffusers AutoencoderKL folder (e.g. <sd>/vae)")
    for key, ok, rule in (
        ("temporal_weight", vae.temporal_weight >= 0, ">= 0"),
        ("learning_rate", vae.learning_rate > 0, "> 0"),
        ("warmup_steps", vae.warmup_steps >= 0, ">= 0"),
        ("num_steps", vae.num_steps >= 1, ">= 1"),
        ("log_every", vae.log_every >= 1, ">= 1"),
    ):
        if not ok:
            raise ConfigError(f"config key 'vae.{key}' must be {rule}, got {vae[key]}")
    if config.data.num_frames < 2:
        raise ConfigError("config key 'data.num_frames': the VideoVAE learns across frames, so it needs >= 2")


def build_video_vae(config: ml_collections.ConfigDict):
    """(image VAE, VideoVAE with its 2D weights) for `config`; errors a user can fix are ConfigErrors."""
    vae, data = config.vae, config.data
    image_vae = load_vae(vae.path, dtype=vae.dtype, allow_pickle=vae.allow_pickle)
    factor = image_vae.config.downsampling_factor
    if data.resolution % factor:
        raise ConfigError(f"config key 'data.resolution': {data.resolution} is not divisible by the VAE's {factor}")
    if data.channels != image_vae.config.in_channels:
        raise ConfigError(f"config key 'data.channels': the VAE takes {image_vae.config.in_channels} channels")
    try:
        video_vae = video_vae_from_image(
            image_vae, temporal_spec(vae), num_frames=data.num_frames, rngs=nnx.Rngs(config.seed)
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return image_vae, video_vae


def finetune_video_vae(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> dict[str, float]:
    """Fine-tunes the VideoVAE of `config` in `workdir`; returns the last logged metrics.

    Checkpoints like the U-Net trainer (`train.checkpoint_every`, `keep_checkpoints`, `keep_every`):
    rerun on the same workdir, it resumes exactly from the newest checkpoint that restores; SIGTERM
    saves one and returns before the VideoVAE is written.
    """
    _check(config)
    workdir = epath.Path(workdir).resolve()  # Orbax wants absolute paths.
    vae = config.vae
    num_steps = int(vae.num_steps)
    image_vae, video_vae = build_video_vae(config)
    graphdef, params, frozen = nnx.split(video_vae, trainable_filter(TRAINABLE_PARTS[vae.trainable]), ...)
    encoder_graphdef, encoder = nnx.split(image_vae)
    optimizer = make_video_vae_optimizer(
        float(vae.learning_rate), warmup_steps=int(vae.warmup_steps), weight_decay=float(vae.weight_decay)
    )
    logging.info(
        "fine-tuning the VideoVAE (%s parameters trained, %s frozen) for %d steps",
        f"{sum(x.size for x in jax.tree.leaves(params)):,}",
        f"{sum(x.size for x in jax.tree.leaves(frozen)):,}",
        num_steps,
    )
    mesh = parallel.make_mesh(config.mesh)
    replicated, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    frozen, encoder = jax.device_put((frozen, encoder), replicated)
    state = jax.device_put(init_video_vae_state(params, optimizer, config.seed), replicated)
    checkpointer = Checkpointer(str(workdir), config.train)
    restored = checkpointer.restore_latest(abstract_like(state, jax.tree.map(lambda _: replicated, state)))
    start_step, data_state = 0, None
    if restored is not None:
        start_step, state, data_state = restored
        logging.info("Resumed from the checkpoint at step %d in %s", start_step, workdir)
    step_fn = jax.jit(
        make_video_vae_step(
            graphdef,
            encoder_graphdef,
            optimizer,
            loss=vae.loss,
            temporal_weight=float(vae.temporal_weight),
            sample_posterior=bool(vae.sample_posterior),
        ),
        in_shardings=(replicated, replicated, replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    source = make_source(config.data, seed=config.seed)
    loader = make_loader(config.data, source, batch_sharding, seed=config.seed, state=data_state)
    logger = MetricLogger(str(workdir), start_step, num_steps, enabled=jax.process_index() == 0)
    preemption = PreemptionWatch()
    last: dict[str, float] = {}
    step = saved_step = start_step

    def save() -> None:
        nonlocal saved_step
        if step != saved_step:
            checkpointer.save(step, state, loader.get_state(), config)
            saved_step = step

    try:
        while step < num_steps:
            state, metrics = step_fn(state, frozen, encoder, next(loader)["video"])
            step += 1
            if step % vae.log_every == 0 or step == num_steps:
                last = {name: float(value) for name, value in jax.device_get(metrics).items()}
                if not math.isfinite(last["loss"]):
                    raise FloatingPointError(
                        f"the VideoVAE loss is {last['loss']} at step {step}; lower vae.learning_rate"
                    )
                logger.scalars(step, last)
            logger.advance(step, last.get("loss"))
            if step % config.train.checkpoint_every == 0:
                save()
            if preemption.should_stop(step):
                break
        save()
        checkpointer.wait()
    finally:
        preemption.close()
        checkpointer.close()
        loader.close()
        logger.close()
    if step < num_steps:
        logging.info("Stopped at step %d on SIGTERM; the checkpoint is saved, rerun to resume.", step)
        return last
    model: VideoVAE = nnx.merge(graphdef, state.params, frozen)
    directory = save_video_vae(workdir / OUTPUT, model)
    logging.info("wrote the fine-tuned VideoVAE to %s", directory)
    return last
