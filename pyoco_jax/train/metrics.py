"""Training telemetry: TensorBoard scalars and images, metrics.jsonl, a progress bar, a log line every N steps.

Only process 0 writes; other processes get a logger that does nothing.
"""

import json
import pathlib
import time

import numpy as np
from absl import logging


class MetricLogger:
    def __init__(self, workdir: str, start_step: int, num_steps: int, enabled: bool):
        self.enabled = enabled
        self._writer = None
        self._bar = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        self._writer = SummaryWriter(logdir=f"{workdir}/tensorboard")
        self._jsonl = open(pathlib.Path(workdir) / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        self._bar = tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)

    def advance(self, step: int, loss: float | None = None) -> None:
        if self._bar is not None:
            self._bar.n = step
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.refresh()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), step)
        line = " ".join(f"{name}={value:.4g}" for name, value in values.items())
        logging.info("step %d: %s", step, line)
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
        self._jsonl.flush()
        self._writer.flush()

    def video_grid(self, step: int, tag: str, videos: np.ndarray) -> None:
        """uint8 (N, F, H, W, C) as one image: a row of frames per sample."""
        if not self.enabled:
            return
        n, f, h, w, c = videos.shape
        image = videos.transpose(0, 2, 1, 3, 4).reshape(n * h, f * w, c)
        self._writer.add_image(tag, image, step, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
            self._jsonl.close()


class Throughput:
    """Steps/s, frames/s and the fraction of wall time spent waiting for data, per interval."""

    def __init__(self, frames_per_step: int):
        self.frames_per_step = frames_per_step
        self.reset()

    def reset(self) -> None:
        self._start = time.perf_counter()
        self._steps = 0
        self._data_wait = 0.0

    def record(self, data_wait_seconds: float) -> None:
        self._steps += 1
        self._data_wait += data_wait_seconds

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        steps_per_second = self._steps / elapsed
        values = {
            "steps_per_second": steps_per_second,
            "frames_per_second": steps_per_second * self.frames_per_step,
            "data_wait_fraction": self._data_wait / elapsed,
        }
        self.reset()
        return values
