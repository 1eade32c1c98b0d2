"""The training log's throughput figures: steps/s, frames/s, model TFLOP/s per device and MFU, from a clock."""

import pytest

from pyoco_jax.train import metrics
from pyoco_jax.train.metrics import Throughput


def test_model_tflops_and_mfu_follow_the_step_rate(monkeypatch):
    clock = iter([100.0, 104.0])  # Two steps in 4 s.
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    throughput = Throughput(frames_per_step=64, flops_per_device=2e14, peak_flops=459e12)
    throughput.record(0.5)
    throughput.record(0.5)
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: 104.0)
    values = throughput.summary()
    assert values["steps_per_second"] == pytest.approx(0.5)
    assert values["frames_per_second"] == pytest.approx(32.0)
    assert values["data_wait_fraction"] == pytest.approx(0.25)
    assert values["model_tflops_per_device"] == pytest.approx(100.0)  # 0.5 steps/s x 2e14 FLOPs.
    assert values["mfu"] == pytest.approx(1e14 / 459e12)


def test_no_mfu_without_a_known_peak():
    values = Throughput(frames_per_step=8, flops_per_device=1e9).summary()
    assert "model_tflops_per_device" in values and "mfu" not in values
