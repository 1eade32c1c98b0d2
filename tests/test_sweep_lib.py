"""pyoco_jax.sweep: building run lists, naming runs, and the override text the command line reads back."""

import re

import pytest

from pyoco_jax import sweep
from pyoco_jax.config import load_config
from pyoco_jax.sweep import SweepError
from tests.train.helpers import REPO, TINY


def test_product_zip_and_union_build_the_expected_runs():
    priors = sweep.axis("noise.prior", ["mixed", "progressive"])
    alphas = sweep.axis("noise.alpha", [0.5, 1.0, 2.0])
    assert sweep.product(priors, alphas) == [
        {"noise.prior": p, "noise.alpha": a} for p in ("mixed", "progressive") for a in (0.5, 1.0, 2.0)
    ]  # The first axis varies slowest.
    rates = sweep.axis("optim.learning_rate", [1e-3, 3e-4, 1e-4])
    assert sweep.zipped(alphas, rates) == [
        {"noise.alpha": 0.5, "optim.learning_rate": 1e-3},
        {"noise.alpha": 1.0, "optim.learning_rate": 3e-4},
        {"noise.alpha": 2.0, "optim.learning_rate": 1e-4},
    ]
    assert sweep.union(sweep.axis("noise.prior", ["iid"]), priors) == [
        {"noise.prior": "iid"},
        {"noise.prior": "mixed"},
        {"noise.prior": "progressive"},
    ]
    assert len(sweep.product(priors, sweep.zipped(alphas, rates))) == 6


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: sweep.product(sweep.axis("noise.alpha", [1.0]), sweep.axis("noise.alpha", [2.0])), "one axis only"),
        (lambda: sweep.zipped(sweep.axis("a.b", [1, 2]), sweep.axis("a.c", [1])), r"same number of runs, got \[2, 1\]"),
        (lambda: sweep.axis("noise.prior", "mixed"), "give a list of values"),
        (lambda: sweep.axis("noise.prior", []), "has no values"),
    ],
)
def test_bad_combinations_are_refused(build, message):
    with pytest.raises(SweepError, match=message):
        build()


def test_run_names_follow_the_overrides():
    run = {"noise.prior": "mixed", "noise.alpha": 1.0, "optim.learning_rate": 1e-3}
    names = sweep.name_runs([run, {}], aliases={"optim.learning_rate": "lr"})
    assert list(names) == ["prior-mixed_alpha-1.0_lr-1e-3", "base"]
    assert names["prior-mixed_alpha-1.0_lr-1e-3"] == run


@pytest.mark.parametrize(
    "value, text",
    [(0.5, "0.5"), (1.0, "1.0"), (3e-4, "3e-4"), (2.5e-5, "2.5e-5"), (1234.5, "1234.5"),
     (1.2345678e-4, "0.00012345678"),
     (7, "7"), (-1e-3, "-1e-3"), (True, "true"), ((8, 16, 16), "8-16-16"), ("scaled_linear", "scaled_linear"),
     ("a/b c", "a-b-c"), ("../x", "..-x")],
)  # fmt: skip
def test_values_in_names_are_short_faithful_and_filesystem_safe(value, text):
    assert sweep.name_value(value) == text
    assert re.fullmatch(r"[A-Za-z0-9._+-]+", text)
    if isinstance(value, float):
        assert float(text) == value  # Nothing lost: equal names mean equal values.


def test_identical_runs_get_one_name_and_are_refused():
    runs = [{"noise.alpha": 1.0}, {"noise.alpha": 2.0}, {"noise.alpha": 1.0}]
    with pytest.raises(SweepError, match=r"runs 0 .* and 2 .* are both named 'alpha-1.0'"):
        sweep.name_runs(runs)


def test_keys_with_the_same_short_name_need_an_alias():
    runs = [{"data.fps": 8.0, "sample.fps": 8.0}]
    with pytest.raises(SweepError, match=r"'data.fps' and 'sample.fps' would both be called 'fps'.*SHORT_NAMES"):
        sweep.name_runs(runs)
    assert list(sweep.name_runs(runs, aliases={"sample.fps": "out_fps"})) == ["fps-8.0_out_fps-8.0"]


@pytest.mark.parametrize(
    "runs, message",
    [
        ([{"noise.alpha": 1.0}, "noise.alpha=2"], r"run 1: expected a dict of config overrides"),
        ([{"noise alpha": 1.0}], r"run 0: 'noise alpha' is not a config key"),
        ([{"train.init_from": None}], r"run 0: train.init_from=None: a value must be a bool, int, float, str"),
        ([{"noise.alpha": 1.0}, {"noise.alpha": {"x": 1}}], r"run 1: noise.alpha=\{'x': 1\}"),
    ],
)
def test_bad_runs_name_the_run_and_the_key(runs, message):
    with pytest.raises(SweepError, match=message):
        sweep.name_runs(runs)


def test_a_long_name_asks_for_short_names():
    with pytest.raises(SweepError, match="longer than 120: shorten it with SHORT_NAMES"):
        sweep.name_runs([{"data.path": "x" * 200}])


@pytest.mark.parametrize(
    "key, value",
    [("noise.prior", "mixed"), ("noise.alpha", 0.5), ("optim.learning_rate", 3e-4), ("train.num_steps", 7),
     ("data.flip", True), ("model.block_out_channels", (8, 16, 16)), ("model.temporal.levels", (1,)),
     ("model.attention_levels", (False, True, True))],
)  # fmt: skip
def test_override_text_reads_back_as_the_same_value(key, value):
    # The text must read back through the command line's own parser (pyoco_jax.config_values) unchanged.
    config = load_config(TINY, [f"{key}={sweep.format_value(value)}"])
    node = config
    for part in key.split("."):
        node = node[part]
    assert node == value and type(node) is type(value)


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("def get_sweep():\n    return [{}]\n", "set CONFIG"),
        ("CONFIG = 'configs/tiny.py'\n", "define get_sweep"),
        ("CONFIG = 'configs/tiny.py'\ndef get_sweep():\n    return []\n", "non-empty list"),
    ],
)
def test_sweep_files_missing_a_part_say_what_to_add(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        sweep.load_sweep(_write(tmp_path / "bad.py", text))
    with pytest.raises(SweepError, match="no such sweep file"):
        sweep.load_sweep(str(tmp_path / "missing.py"))


def test_the_noise_prior_sweep():
    loaded = sweep.load_sweep(str(REPO / "configs" / "sweeps" / "noise_prior.py"))
    assert loaded.config == "configs/tiny.py"
    alphas = ("0.5", "1.0", "2.0", "4.0")
    expected = ["prior-iid"] + [f"prior-{p}_alpha-{a}" for p in ("mixed", "progressive") for a in alphas]
    assert list(loaded.runs) == expected
    assert loaded.runs["prior-iid"] == {"noise.prior": "iid"}  # alpha does not enter iid noise: one run.
    assert loaded.keys == ["noise.prior", "noise.alpha"]


def test_an_empty_short_name_leaves_the_key_out_of_names():
    runs = [{"data.num_frames": 1, "model.temporal.mid": False, "seed": 0}, {"seed": 0}]
    names = sweep.name_runs(runs, aliases={"data.num_frames": "frames", "model.temporal.mid": ""})
    assert list(names) == ["frames-1_seed-0", "seed-0"]


def test_sweep_dir_placeholder_names_and_formats_an_earlier_runs_output():
    run = {"train.init_from": "{sweep}/frames-1_seed-0", "seed": 0}
    assert list(sweep.name_runs([run], aliases={"train.init_from": "from"})) == ["from-frames-1_seed-0_seed-0"]
    assert sweep.format_value(run["train.init_from"], "/runs/study") == "/runs/study/frames-1_seed-0"
