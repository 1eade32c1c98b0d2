"""The training loop, top to bottom: build, resume, step, log, checkpoint, sample.

A run is a pure function of (config, workdir): started again on the same
workdir it resumes from the latest checkpoint and continues exactly as if it
had never stopped. SIGTERM (preemption) saves a checkpoint and exits cleanly.
"""

import time

import jax
import ml_collections
from absl import logging

from pyoco_jax import distributed, parallel
from pyoco_jax.data.loader import make_loader, make_source
from pyoco_jax.errors import UserError
from pyoco_jax.evaluate.run_eval import write_results
from pyoco_jax.sample.decode import latent_decoder
from pyoco_jax.sample.inputs import sampling_inputs
from pyoco_jax.sample.output import write_videos
from pyoco_jax.sample.sampler import make_sampler, sample_videos
from pyoco_jax.train.build import build_run, sharded_step
from pyoco_jax.train.checkpoint import Checkpointer, abstract_like
from pyoco_jax.train.flops import step_model_flops
from pyoco_jax.train.hardware import local_peak_flops
from pyoco_jax.train.in_loop_eval import make_in_loop_eval
from pyoco_jax.train.metrics import MetricLogger, Throughput
from pyoco_jax.train.optimizer import learning_rate_schedule
from pyoco_jax.train.preemption import PreemptionWatch


class NonFiniteLossError(UserError):
    """Raised when the loss stayed non-finite for `optim.max_nonfinite_steps` steps in a row."""


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`; returns the last logged metrics.

    Every process of a multi-host run calls this with the same config (checked first); only
    process 0 writes logs, TensorBoard and samples, all take part in checkpoints.
    """
    distributed.check_processes_agree(config)
    num_steps = int(config.train.num_steps)
    is_main = jax.process_index() == 0
    mesh = parallel.make_mesh(config.mesh)
    parts = build_run(config)
    schedule = learning_rate_schedule(config.optim, num_steps)
    source = make_source(config.data, seed=config.seed)
    null_context = source.null_context() if hasattr(source, "null_context") else None  # Text: the empty prompt.
    train_step = sharded_step(parts, config, mesh, source[0], null_context=null_context)
    state_sharding = train_step.state_sharding
    logging.info("Mesh %s over %d process(es)", dict(mesh.shape), jax.process_count())

    checkpointer = Checkpointer(workdir, config.train)
    restored = checkpointer.restore_latest(abstract_like(parts.abstract_state, state_sharding))
    data_state = None
    if restored is None:
        state = parts.create_state(config, state_sharding)
        if config.train.init_from:
            from pyoco_jax.train.pretrained import init_from_pretrained

            state = init_from_pretrained(state, parts, config)
        start_step = 0
        logging.info("Starting a new run in %s", workdir)
    else:
        start_step, state, data_state = restored
        logging.info("Resumed from the checkpoint at step %d in %s", start_step, workdir)
    loader = make_loader(config.data, source, parallel.batch_sharding(mesh), seed=config.seed, state=data_state)
    sharded_sampler = make_sampler(parts.graphdef, parts.formulation, config, config.sample.num_steps)
    gather = jax.jit(lambda x: x, out_shardings=parallel.replicated(mesh))

    def sampler(*args, **kwargs):  # Videos replicated, so every process can read them whole.
        return gather(sharded_sampler(*args, **kwargs))

    logger = MetricLogger(workdir, start_step, num_steps, enabled=is_main)
    shapes = loader.examples_by_share()  # One shape, or (data.buckets) each bucket's, weighted by its batches.
    frames_per_step = config.data.global_batch_size * sum(share * ex["video"].shape[0] for share, ex in shapes)
    peak = local_peak_flops()
    # Counting the step's FLOPs traces it once more (seconds on a CPU): done where MFU has a peak to divide by.
    flops = sum(share * step_model_flops(config, mesh, ex) for share, ex in shapes) if peak else 0.0
    throughput = Throughput(frames_per_step, flops / mesh.size, peak)
    preemption = PreemptionWatch()
    last_metrics: dict[str, float] = {}
    pending = None
    step = start_step
    saved_step = start_step

    def save(at_step: int) -> None:
        nonlocal saved_step
        if at_step != saved_step:
            checkpointer.save(at_step, state, loader.get_state(), config)
            saved_step = at_step

    num_samples = config.sample.num_samples
    inputs = sampling_inputs(config, num_samples, prompts=config.sample.prompts, null_context=null_context)
    decode = latent_decoder(config)

    def sample(at_step: int) -> None:
        videos = sample_videos(
            sampler, state.ema, state.frozen, config, seed=config.seed, num=num_samples, decode=decode, **inputs
        )
        if is_main:
            paths = write_videos(videos, f"{workdir}/samples/step_{at_step:07d}.mp4", config.sample.fps)
            logger.video_grid(at_step, "samples", videos)
            logging.info("Wrote samples %s", ", ".join(map(str, paths)))

    in_loop_eval = make_in_loop_eval(config, mesh, sampler, null_context)  # None unless train.eval_every.

    def evaluate(at_step: int) -> None:
        results = in_loop_eval(state)
        if is_main:
            logger.scalars(at_step, results)
            write_results(workdir, at_step, results)

    def check(metrics_step: int, metrics) -> dict[str, float]:
        values = {name: float(value) for name, value in jax.device_get(metrics).items()}
        if values["nonfinite_streak"] >= config.optim.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"the loss was non-finite for {int(values['nonfinite_streak'])} steps in a row (last at step "
                f"{metrics_step}); lower optim.learning_rate, enable optim.grad_clip_norm, or check the data."
            )
        return values

    try:
        while step < num_steps:
            wait_start = time.perf_counter()
            batch = next(loader)
            throughput.record(time.perf_counter() - wait_start)
            state, metrics = train_step.fn(state, parallel.place_batch(batch, train_step.batch_sharding))
            step += 1
            if pending is not None:  # Read the previous step's metrics: keeps one step in flight.
                check(*pending)
            pending = (step, metrics)
            if step % config.train.log_every == 0 or step == num_steps:
                values = check(*pending)
                values.update(throughput.summary(), learning_rate=float(schedule(step - 1)))
                logger.scalars(step, values)
                last_metrics = values
            logger.advance(step, last_metrics.get("loss"))
            if step % config.train.checkpoint_every == 0 and step < num_steps:
                save(step)
            if preemption.should_stop(step):
                break
            if config.train.sample_every and step % config.train.sample_every == 0 and step < num_steps:
                sample(step)
            if in_loop_eval and step % config.train.eval_every == 0 and step < num_steps:
                evaluate(step)
        if pending is not None:
            last_metrics.update(check(*pending))
        save(step)
        if step >= num_steps:
            sample(step)
            if in_loop_eval:
                evaluate(step)
        checkpointer.wait()
    finally:
        preemption.close()
        checkpointer.close()
        loader.close()
        logger.close()
    if step < num_steps:
        logging.info("Stopped at step %d on SIGTERM; the checkpoint is saved, rerun to resume.", step)
    return last_metrics
