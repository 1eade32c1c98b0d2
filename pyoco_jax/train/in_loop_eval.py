"""In-loop evaluation (`train.eval_every`): the trainer's own sampler scores the EMA params as `pyoco-eval` would.

Built once per run, so the I3D network compiles once and the real FVD statistics are read from their cache.
"""

import time
from collections.abc import Callable

import ml_collections
import numpy as np
from jax.sharding import Mesh

from pyoco_jax.evaluate.run_eval import Evaluator
from pyoco_jax.sample.decode import latent_decoder
from pyoco_jax.sample.inputs import sampling_inputs
from pyoco_jax.sample.sampler import sample_videos


def make_in_loop_eval(
    config: ml_collections.ConfigDict, mesh: Mesh, sampler, null_context: np.ndarray | None
) -> Callable[[object], dict[str, float]] | None:
    """`evaluate(state) -> {eval/...: value, eval/seconds: wall time}`; None when `train.eval_every` is 0.

    Clips are drawn a global batch at a time with the training prompts' conditioning (`sample.prompts`).
    """
    train = config.train
    if not train.eval_every:
        return None
    batch = config.data.global_batch_size
    evaluator = Evaluator(
        config,
        train.eval_metric,
        protocol=train.eval_protocol,
        num=train.eval_num,
        batch=batch,
        seed=config.seed,
        clip_path=train.eval_clip,
        mesh=mesh,
    )
    inputs = sampling_inputs(config, batch, prompts=config.sample.prompts, null_context=null_context)
    decode = latent_decoder(config)

    def evaluate(state) -> dict[str, float]:
        begin = time.perf_counter()

        def draw(num: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
            videos = sample_videos(
                sampler, state.ema, state.frozen, config, seed=seed, num=num, decode=decode, **inputs
            )
            return videos, inputs["labels"]

        results = evaluator(draw)
        return {**results, "eval/seconds": time.perf_counter() - begin}

    return evaluate
