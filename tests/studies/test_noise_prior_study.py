"""The noise-prior study end to end at toy size: one `launch/sweep.py` command trains the image run, the
fine-tunes and the scratch baseline in order, then evaluates them and writes the report with its curve."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pyoco_jax.studies.bootstrap import interval, paired_difference
from pyoco_jax.studies.noise_prior import SHORT_NAMES, Study, study_runs
from pyoco_jax.studies.noise_prior_report import arms_of, headline, plot_curves, verdict
from pyoco_jax.sweep import name_runs
from tests.train.helpers import REPO, single_device_env

SMALL = (
    "--config.sample.num_steps=2",
    "--config.train.log_every=1",
    "--config.optim.warmup_steps=1",
    "--config.optim.schedule=constant",  # The step does not depend on the run's length: the scratch run reuses it.
    "--config.model.block_out_channels=(8,16,16)",
)


def test_runs_come_in_training_order_and_fine_tunes_read_their_seeds_image_run():
    study = Study(seeds=(0, 1))
    runs = name_runs(study_runs(study), aliases=SHORT_NAMES)
    names = list(runs)
    assert names[:2] == ["frames-1_steps-600_seed-0", "frames-1_steps-600_seed-1"]
    assert runs["frames-8_steps-300_prior-mixed_alpha-4.0_seed-1"]["train.init_from"] == "{sweep}/" + names[1]
    assert names[-1] == "frames-8_steps-900_prior-iid_seed-1" and "train.init_from" not in runs[names[-1]]
    arms = arms_of(runs)
    assert [arm.label for arm in arms] == [
        "iid", "mixed a=1", "mixed a=4", "progressive a=1", "progressive a=2", "scratch iid"
    ]  # fmt: skip
    assert all(len(arm.runs) == 2 for arm in arms)


def test_bootstrap_intervals_hold_the_estimate_and_see_seed_to_seed_spread():
    rng = np.random.default_rng(0)
    tight = [rng.normal(0.5, 0.1, 200) for _ in range(3)]
    spread = [rng.normal(mean, 0.1, 200) for mean in (0.3, 0.5, 0.7)]  # Seeds that disagree.
    point, low, high = interval(tight, np.mean)
    assert low < point < high and high - low < 0.05
    _, spread_low, spread_high = interval(spread, np.mean)
    assert spread_high - spread_low > 4 * (high - low)  # Clip-only resampling would miss this.
    difference = paired_difference([g + 0.2 for g in spread], spread, np.mean)
    assert difference[0] == pytest.approx(0.2) and difference[1] > 0.15  # The shared seed spread cancels.


def test_the_curve_draws_intervals_that_miss_their_estimate(tmp_path):
    """FVD is biased upwards under resampling, so its bootstrap interval can lie wholly above the estimate."""
    curves = {"iid": {100: (50.0, 55.0, 70.0), 200: (40.0, 38.0, 45.0)}, "progressive a=2": {100: (45.0, 47.0, 60.0)}}
    out = tmp_path / "curve.png"
    plot_curves(curves, frames_per_step=64, out=out, protocol="fvd66_8f")
    assert out.stat().st_size > 10_000


def test_verdicts_follow_the_intervals_only():
    assert verdict((-5.0, -9.0, -1.0), lower_is_better=True) == "better"
    assert verdict((-5.0, -9.0, 1.0), lower_is_better=True) == "unresolved"
    assert verdict((0.1, 0.05, 0.2), lower_is_better=False) == "better"
    assert headline({"mixed a=1": (-5.0, -9.0, 1.0)}).startswith("No difference resolved")
    assert headline({"mixed a=1": (5.0, 1.0, 9.0)}).startswith("Reversed here: mixed a=1")


@pytest.mark.slow
def test_the_study_command_trains_evaluates_and_reports(tmp_path):
    report = tmp_path / "report.md"
    sweep_file = tmp_path / "toy_study.py"
    sweep_file.write_text(
        textwrap.dedent(f"""
        from pyoco_jax.studies.noise_prior import SHORT_NAMES, Study, study_runs
        CONFIG = {str(REPO / "configs" / "noise_prior_study.py")!r}
        STUDY = Study(image_steps=2, video_steps=2, curve_points=2, seeds=(0,),
                      arms=(("iid", 0.0), ("progressive", 2.0)),
                      eval_clips=4, fvd_clips=4, curve_clips=2, sample_batch=4, report={str(report)!r})
        def get_sweep():
            return study_runs(STUDY)
        def report(workdir, runs, config):
            from pyoco_jax.studies.noise_prior_report import write_report
            write_report(STUDY, workdir, runs, config, "toy study")
    """)
    )
    workdir = tmp_path / "study"  # Given relative to the working directory, as a user types it.
    command = [sys.executable, str(REPO / "launch" / "sweep.py"), str(sweep_file), "--workdir=study", *SMALL]
    env = single_device_env() | {"HOME": str(tmp_path / "home")}  # Real FVD statistics cached there.
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = report.read_text()
    assert "**Headline:**" in text and "| progressive a=2 |" in text and "| scratch iid |" in text
    assert (tmp_path / "report" / "fvd_vs_step.png").stat().st_size > 10_000
    records = sorted(
        p.name for p in (workdir / "frames-8_steps-2_prior-progressive_alpha-2.0_seed-0" / "study").iterdir()
    )
    assert records == [  # One curve point before the end (curve_points=2), then the final records.
        "step_0000001_prior_2clips_2featurised.npz",
        "step_0000002_iid_4clips_4featurised.npz",
        "step_0000002_prior_4clips_4featurised.npz",
    ]
