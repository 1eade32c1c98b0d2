"""The noise-prior study's report: pooled metrics per arm with hierarchical-bootstrap intervals, differences
against i.i.d. fine-tuning, FVD-vs-step curves (PNG), the compute used, and a conclusion drawn from the
intervals alone (a difference whose interval holds 0 is reported as unresolved, never as a win)."""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pyoco_jax.data.loader import make_source
from pyoco_jax.evaluate.colour_drift import clip_colour_drift
from pyoco_jax.evaluate.frechet import FrechetToReference
from pyoco_jax.studies.bootstrap import interval, paired_difference
from pyoco_jax.studies.clip_records import clip_records
from pyoco_jax.studies.noise_prior import Study

Interval = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Arm:
    """Runs that differ only in seed: a fine-tune with one prior, or the from-scratch baseline."""

    label: str
    prior: str
    alpha: float
    from_image: bool
    runs: tuple[str, ...]  # Run names, one per seed, in seed order.


def arms_of(runs: Mapping[str, dict]) -> list[Arm]:
    """The study's arms from its runs' overrides (image runs are stage 1, not an arm)."""
    grouped: dict[tuple, list[str]] = {}
    for name, values in runs.items():
        if values["data.num_frames"] == 1:
            continue
        key = (values["noise.prior"], float(values.get("noise.alpha", 0.0)), "train.init_from" in values)
        grouped.setdefault(key, []).append(name)
    arms = []
    for (prior, alpha, from_image), names in grouped.items():
        label = prior if prior == "iid" else f"{prior} a={alpha:g}"
        arms.append(Arm(label if from_image else f"scratch {label}", prior, alpha, from_image, tuple(names)))
    return arms


def training_seconds(run_dir: Path) -> float:
    """Wall time of training from the logged step rates (the first interval includes compiling)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rated = [r for r in records if "steps_per_second" in r]
    steps = np.diff([0] + [r["step"] for r in rated])
    return float(sum(step / r["steps_per_second"] for step, r in zip(steps, rated, strict=True)))


def final_loss(run_dir: Path, last: int = 5) -> float:
    """Mean of the last logged losses (context only: losses of different priors are not comparable)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in records if "loss" in r]
    return float(np.mean(losses[-last:]))


def _cell(value: Interval, digits: int) -> str:
    point, low, high = value
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


class Evaluation:
    """Every record the report needs, read from the runs' caches or computed once into them."""

    def __init__(self, study: Study, workdir: str, config):
        from pyoco_jax.evaluate.run_eval import Evaluator
        from pyoco_jax.evaluate.shape_report import shape_classifier

        self.study, self.workdir = study, Path(workdir)
        batch = study.sample_batch
        self.final = Evaluator(config, "fvd", protocol=study.fvd_protocol(study.fvd_clips), batch=batch)
        self.curve = Evaluator(config, "fvd", protocol=study.fvd_protocol(study.curve_clips), batch=batch)
        self.classifier = shape_classifier(config)

    def records(self, run: str, step: int, sampling: str, clips: int, featurised: int) -> dict[str, np.ndarray]:
        return clip_records(
            str(self.workdir / run),
            step,
            sampling=sampling,
            clips=clips,
            featurised=featurised,
            batch=self.study.sample_batch,
            classifier=self.classifier,
            fvd=self.final,
        )

    def final_records(self, arm: Arm, sampling: str) -> list[dict[str, np.ndarray]]:
        study = self.study
        steps = study.video_steps if arm.from_image else study.image_steps + study.video_steps
        return [self.records(run, steps, sampling, study.eval_clips, study.fvd_clips) for run in arm.runs]

    def curve_features(self, arm: Arm) -> dict[int, list[np.ndarray]]:
        """Frames seen (in video steps, counting image pretraining) -> per-seed features of the first clips."""
        study = self.study
        steps = study.video_steps if arm.from_image else study.image_steps + study.video_steps
        offset = study.image_steps if arm.from_image else 0
        points = {}
        for point in range(1, study.curve_points + 1):
            step = steps * point // study.curve_points
            if step == steps:
                features = [r["features"][: study.curve_clips] for r in self.final_records(arm, "prior")]
            else:
                clips = study.curve_clips
                features = [self.records(run, step, "prior", clips, clips)["features"] for run in arm.runs]
            points[offset + step] = features
        return points


def fvd_interval(features: list[np.ndarray], to_real: FrechetToReference) -> Interval:
    """FVD of the pooled features with its hierarchical-bootstrap interval."""
    return interval([to_real.prepare(f) for f in features], to_real.distance)


def plot_curves(curves: dict[str, dict[int, Interval]], frames_per_step: int, out: Path, protocol: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, points in curves.items():
        steps = sorted(points)
        values = np.array([points[s] for s in steps])
        x = np.array(steps) * frames_per_step / 1000
        # Interval bars drawn apart from the points: a bootstrap interval of a biased statistic such as FVD
        # (resampled clips repeat, so its FVD is higher) need not contain the full-sample estimate.
        (line,) = axes.plot(x, values[:, 0], marker="o", label=label)
        axes.vlines(x, values[:, 1], values[:, 2], colors=line.get_color(), alpha=0.6)
    axes.set_xlabel("thousands of frames trained on (image pretraining included)")
    axes.set_ylabel(f"FVD ({protocol}, lower is better)")
    axes.set_title("FVD during video training, per arm (95% bootstrap intervals)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def verdict(difference: Interval, lower_is_better: bool) -> str:
    """'better', 'worse' or 'unresolved' for an arm minus i.i.d., from where its interval lies."""
    _, low, high = difference
    if low <= 0 <= high:
        return "unresolved"
    return "better" if (high < 0) == lower_is_better else "worse"


def headline(differences: dict[str, Interval]) -> str:
    """One sentence on PYoCo's direction, from the FVD differences of the correlated arms against i.i.d."""
    verdicts = {label: verdict(value, lower_is_better=True) for label, value in differences.items()}
    better = [label for label, v in verdicts.items() if v == "better"]
    worse = [label for label, v in verdicts.items() if v == "worse"]
    if better and not worse:
        return f"PYoCo's direction holds here: {', '.join(better)} fine-tuning beats i.i.d. noise on FVD."
    if worse and not better:
        return f"Reversed here: {', '.join(worse)} fine-tuning is worse than i.i.d. noise on FVD."
    if better and worse:
        return f"Mixed: {', '.join(better)} beat i.i.d. noise on FVD, {', '.join(worse)} lose to it."
    return "No difference resolved: every correlated prior's FVD interval against i.i.d. fine-tuning holds 0."


def _table(rows: list[tuple[str, dict[str, Interval], str]]) -> list[str]:
    lines = [
        "| arm | FVD | shape accuracy | colour drift | final loss (context) |",
        "|---|---|---|---|---|",
    ]
    for label, metrics, loss in rows:
        cells = [_cell(metrics["fvd"], 1), _cell(metrics["accuracy"], 3), _cell(metrics["drift"], 4)]
        lines.append(f"| {label} | {' | '.join(cells)} | {loss} |")
    return lines


def _difference_table(rows: list[tuple[str, dict[str, Interval]]]) -> list[str]:
    lines = ["| arm minus i.i.d. fine-tune | FVD | shape accuracy | colour drift |", "|---|---|---|---|"]
    for label, metrics in rows:
        cells = [
            f"{_cell(metrics['fvd'], 1)} {verdict(metrics['fvd'], True)}",
            f"{_cell(metrics['accuracy'], 3)} {verdict(metrics['accuracy'], False)}",
            f"{_cell(metrics['drift'], 4)} {verdict(metrics['drift'], True)}",
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def write_report(study: Study, workdir: str, runs: Mapping[str, dict], config, command: str) -> Path:
    """Evaluates every arm (cached per run), then writes `study.report` and its curve PNG; returns the report."""
    evaluation = Evaluation(study, workdir, config)
    root = Path(workdir)
    arms = arms_of(runs)
    baseline = next(arm for arm in arms if arm.from_image and arm.prior == "iid")
    to_real = FrechetToReference(evaluation.final.real_stats())
    statistics = {"fvd": to_real.distance, "accuracy": np.mean, "drift": np.mean}

    def groups(records, metric):
        if metric == "fvd":
            return [to_real.prepare(r["features"]) for r in records]
        return [np.asarray(r["correct" if metric == "accuracy" else "drift"], np.float64) for r in records]

    tables, differences, fvd_differences = {}, {}, {}
    reference = evaluation.final_records(baseline, "prior")
    for sampling in ("prior", "iid"):
        table, rows = [], []
        for arm in arms:
            if sampling == "iid" and (arm.prior == "iid" or not arm.from_image):
                continue
            records = evaluation.final_records(arm, sampling)
            metrics = {m: interval(groups(records, m), statistics[m]) for m in statistics}
            loss = np.mean([final_loss(root / run) for run in arm.runs])
            table.append((arm.label, metrics, f"{loss:.4f}"))
            if arm is not baseline:
                delta = {
                    m: paired_difference(groups(records, m), groups(reference, m), statistics[m]) for m in statistics
                }
                rows.append((arm.label, delta))
                if sampling == "prior" and arm.from_image:
                    fvd_differences[arm.label] = delta["fvd"]
        tables[sampling], differences[sampling] = table, rows

    curve_real = FrechetToReference(evaluation.curve.real_stats())
    curves = {
        arm.label: {
            step: fvd_interval(features, curve_real) for step, features in evaluation.curve_features(arm).items()
        }
        for arm in arms
    }
    report = Path(study.report)
    figure = report.with_suffix("") / "fvd_vs_step.png"
    frames_per_step = study.video_batch * study.num_frames
    plot_curves(curves, frames_per_step, figure, study.fvd_protocol(study.curve_clips))
    floor = evaluation.final.real_baseline()["eval/fvd_real_baseline"]
    source = make_source(config.data, seed=config.seed)
    real_drift = float(clip_colour_drift(np.stack([source[i]["video"] for i in range(study.eval_clips)])).mean())

    stage_seconds = {"image pretraining": 0.0, "video fine-tuning": 0.0, "from scratch": 0.0}
    for name, values in runs.items():
        stage = "image pretraining" if values["data.num_frames"] == 1 else (
            "video fine-tuning" if "train.init_from" in values else "from scratch")  # fmt: skip
        stage_seconds[stage] += training_seconds(root / name)
    eval_seconds = sum(float(np.load(path)["seconds"]) for path in root.glob("*/study/*.npz"))

    seeds, protocol = len(study.seeds), study.fvd_protocol(study.fvd_clips)
    lines = [
        "# PYoCo's claim in small: image pretraining, then video fine-tuning with i.i.d., mixed and progressive noise",
        "",
        f"**Headline:** {headline(fvd_differences)}",
        "",
        "Generated by the command below; every figure here comes from it (rerunning it reuses finished runs and",
        "cached evaluations, so it resumes where it stopped).",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Setup",
        "",
        f"- Data and model: `{config.data.source}` data ({config.data.resolution}x{config.data.resolution}, "
        f"{study.num_frames} frames, background `{config.data.get('background', 'graded')}`), the base config's U-Net.",
        f"- Stage 1, per seed: the U-Net without temporal layers trained as an image model on single frames for "
        f"{study.image_steps} steps of {frames_per_step} frames.",
        f"- Stage 2: each arm fine-tunes every seed's image model on video for {study.video_steps} steps of "
        f"{study.video_batch} clips (the temporal layers start as the identity); same learning rate and seeds.",
        f"- Baseline: a video model from scratch for {study.image_steps + study.video_steps} steps with i.i.d. noise "
        "(as many frames seen as pretraining plus fine-tuning).",
        f"- Seeds: {list(study.seeds)}. Each run samples {study.eval_clips} clips per sampling prior "
        f"({study.eval_clips * seeds} per arm) for shape accuracy and colour drift; FVD pools the first "
        f"{study.fvd_clips} of each seed under `{protocol}`; the curves use {study.curve_clips} per seed "
        f"(`{study.fvd_protocol(study.curve_clips)}`). FVDs under these small protocols compare with each other, "
        "not with published numbers.",
        f"- Intervals: 95% hierarchical percentile bootstrap (seeds, then clips within seeds; 1000 draws). "
        f"Real clips against the cached real statistics score FVD {floor:.1f} under `{protocol}` (the floor).",
        f"- References on real clips: the shape classifier names {evaluation.classifier.held_out_accuracy:.1%} of "
        f"held-out real frames; real clips' colour drift is {real_drift:.4f}.",
        "",
        "## Sampling with the prior each arm was trained with",
        "",
        *_table(tables["prior"]),
        "",
        *_difference_table(differences["prior"]),
        "",
        "## Sampling every arm with i.i.d. noise",
        "",
        *_table(tables["iid"]),
        "",
        *_difference_table(differences["iid"]),
        "",
        "## FVD during video training",
        "",
        f"![FVD vs frames trained on]({figure.parent.name}/{figure.name})",
        "",
        "## Compute",
        "",
        *(f"- {stage}: {seconds / 60:.1f} min of training" for stage, seconds in stage_seconds.items()),
        f"- evaluation (sampling, classifier, I3D): {eval_seconds / 60:.1f} min",
        "",
    ]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    return report
