"""PYoCo's noise-prior ablation in small: iid vs mixed vs progressive over alpha, on the tiny config.

    python launch/sweep.py configs/sweeps/noise_prior.py --workdir runs/sweeps/noise_prior
    python launch/sweep.py configs/sweeps/noise_prior.py --workdir runs/sweeps/noise_prior --summarize-only

Nine runs of configs/tiny.py: iid once (alpha does not enter it), then mixed and progressive at
alpha 0.5, 1, 2 and 4. Compare their final and mean losses in runs/sweeps/noise_prior/summary.md.
"""

from pyoco_jax import sweep

CONFIG = "configs/tiny.py"
SHORT_NAMES = {"noise.prior": "prior", "noise.alpha": "alpha"}


def get_sweep() -> list[dict]:
    correlated = sweep.product(
        sweep.axis("noise.prior", ["mixed", "progressive"]),
        sweep.axis("noise.alpha", [0.5, 1.0, 2.0, 4.0]),
    )
    return sweep.union(sweep.axis("noise.prior", ["iid"]), correlated)
