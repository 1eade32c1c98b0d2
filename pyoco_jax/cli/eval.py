"""`pyoco-eval --workdir DIR [--step N] --metric fvd|clipsim|is|shape [--protocol fvd256_8f] [--config.key=value ...]`.

Samples from a checkpoint of a run and scores the samples; prints the figures and writes them to
DIR/eval/step_<N>.json. `fvd` follows a named protocol (`pyoco_jax.evaluate.fvd_protocol`): it samples the
protocol's clip count and compares their I3D features with real clips of the run's data, whose statistics
are fitted once and cached (next to the data, or in ~/.cache/pyoco_jax for the embedded synthetic data).
`clipsim` scores `--num` clips against the prompts they were sampled from (`sample.prompts`, cycled) with
a CLIPModel folder (`--clip`). `is` is the Inception Score over the synthetic shapes' classifier, `shape`
their accuracy and colour drift. What each measures: `pyoco_jax/evaluate/run_eval.py`.
"""

import json

from absl import flags

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.evaluate.run_eval import METRICS

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_METRIC = flags.DEFINE_enum("metric", "fvd", METRICS, "What to measure.")
_PROTOCOL = flags.DEFINE_string("protocol", "fvd256_8f", "FVD protocol fvd<clips>_<frames>f (fvd_protocol.py).")
_NUM = flags.DEFINE_integer("num", 64, "Clips sampled for clipsim, is and shape.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 32, "Clips sampled at once.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and the real clips' draw for FVD).")
_STATS_DIR = flags.DEFINE_string("stats_dir", "", "Where real FVD statistics are cached (default: see above).")
_CLIP = flags.DEFINE_string("clip", "", "clipsim: transformers CLIPModel folder (default: the run's train.eval_clip).")
_REAL_BASELINE = flags.DEFINE_bool(
    "real_baseline",
    False,
    "FVD of other real clips (the protocol's count, after those in the statistics) instead of samples: the "
    "floor the metric reaches on this data.",
)


def main() -> None:
    from pyoco_jax.evaluate.run_eval import Evaluator, write_results
    from pyoco_jax.evaluate.shape_report import format_shape_metrics
    from pyoco_jax.sample.run_sampler import load_run_sampler

    workdir = absolute(_WORKDIR.value)
    run = load_run_sampler(workdir, _STEP.value, overrides=config_overrides())
    config = run.config
    evaluator = Evaluator(
        config,
        _METRIC.value,
        protocol=_PROTOCOL.value,
        num=_NUM.value,
        batch=_BATCH.value if _METRIC.value == "fvd" else min(_BATCH.value, _NUM.value),
        seed=_SEED.value,
        stats_dir=absolute(_STATS_DIR.value) if _STATS_DIR.value else "",
        clip_path=absolute(_CLIP.value) if _CLIP.value else config.train.eval_clip,
    )
    prompts = tuple(config.sample.prompts) if config.model.cross_attention_dim else ()

    def sample(num: int, seed: int):
        videos, inputs = run.sample(num, seed=seed, prompts=prompts)
        return videos, inputs["labels"]

    results = evaluator.real_baseline() if _REAL_BASELINE.value else evaluator(sample)
    if _METRIC.value == "shape":
        metrics = {key.removeprefix("eval/"): value for key, value in results.items()}
        print(format_shape_metrics(metrics, _NUM.value, config.model.num_classes))
    elif _METRIC.value == "fvd":
        results["protocol"] = _PROTOCOL.value
    results = {"step": run.step, "seed": _SEED.value, **results}
    print(json.dumps(results))
    write_results(workdir, run.step, results)


def run() -> None:
    run_cli("pyoco-eval", main)


if __name__ == "__main__":
    run()
