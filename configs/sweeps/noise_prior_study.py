"""PYoCo's claim in small (docs/noise_prior_study.md): image pretraining, then video fine-tuning with i.i.d.,
mixed (alpha 1, 4) and progressive (alpha 1, 2) noise, against a from-scratch video model at equal compute.

    python launch/sweep.py configs/sweeps/noise_prior_study.py --workdir runs/noise_prior_study

trains 3 image runs, 15 fine-tunes and 3 from-scratch runs one after another, then evaluates them (per-run
caches) and writes docs/noise_prior_study.md with its curve. About two hours on 2 CPU cores (the report
states what it measured). The same command resumes an interrupted study. On an accelerator, scale
`STUDY` (steps, seeds, clips) and the base config; the runs can go to launch/tpu.py with --launcher tpu,
the image runs first (the fine-tunes read them), then the report with --summarize-only.
"""

from pathlib import Path

from pyoco_jax.studies.noise_prior import SHORT_NAMES, Study, study_runs

CONFIG = "configs/noise_prior_study.py"
REPO = Path(__file__).resolve().parents[2]
STUDY = Study(report=str(REPO / "docs" / "noise_prior_study.md"))
__all__ = ["CONFIG", "SHORT_NAMES", "get_sweep", "report"]


def get_sweep() -> list[dict]:
    return study_runs(STUDY)


def report(workdir: str, runs: dict[str, dict], config) -> None:
    from pyoco_jax.studies.noise_prior_report import write_report

    command = f"python launch/sweep.py configs/sweeps/noise_prior_study.py --workdir {workdir}"
    write_report(STUDY, workdir, runs, config, command)
