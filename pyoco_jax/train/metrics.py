"""Training telemetry: TensorBoard scalars and images, metrics.jsonl, a progress bar, a log line every N steps.

Only process 0 writes; other processes get a logger that does nothing. For a remote workdir (gs://) the
files are written into a local staging directory and mirrored into the workdir through etils.epath: object
stores cannot append, and tensorboardX reaches gs:// only with extra packages. Local workdirs are written
directly, so nothing is lost when a run is killed.
"""

import json
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
from absl import logging
from etils import epath


class WorkdirMirror:
    """A local directory whose changed files `sync()` copies to the same relative paths under `workdir`.

    `staged` (default: whether `workdir` is a URL such as gs://) writes through a temporary directory;
    otherwise `local` is the workdir itself and syncing does nothing. `resume` names files that runs
    append to: their copy in the workdir, if any, is brought into the staging directory first.
    """

    def __init__(self, workdir: str | os.PathLike, resume: tuple[str, ...] = (), staged: bool | None = None):
        self.remote = epath.Path(workdir)
        self.staged = "://" in os.fspath(workdir) if staged is None else staged
        if not self.staged:
            self.local = pathlib.Path(workdir)
            self.local.mkdir(parents=True, exist_ok=True)
            return
        self.local = pathlib.Path(tempfile.mkdtemp(prefix="pyoco_jax_logs_"))
        self._synced: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last copied
        for name in resume:
            source = self.remote / name
            if source.exists():
                (self.local / name).parent.mkdir(parents=True, exist_ok=True)
                (self.local / name).write_bytes(source.read_bytes())
                self._synced[name] = self._signature(self.local / name)

    @staticmethod
    def _signature(file: pathlib.Path) -> tuple[int, int]:
        stat = file.stat()
        return stat.st_size, stat.st_mtime_ns

    def sync(self) -> None:
        if not self.staged:
            return
        for file in sorted(self.local.rglob("*")):
            if not file.is_file():
                continue
            name = file.relative_to(self.local).as_posix()
            signature = self._signature(file)
            if self._synced.get(name) == signature:
                continue
            target = self.remote / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
            self._synced[name] = signature

    def close(self) -> None:
        if self.staged:
            self.sync()
            shutil.rmtree(self.local, ignore_errors=True)


class MetricLogger:
    """Writes metrics.jsonl and TensorBoard events under `workdir`, copied there at most every `sync_seconds`."""

    def __init__(
        self,
        workdir: str,
        start_step: int,
        num_steps: int,
        enabled: bool,
        sync_seconds: float = 30.0,
        staged: bool | None = None,
    ):
        self.enabled = enabled
        self._writer = None
        self._bar = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        self._mirror = WorkdirMirror(workdir, resume=("metrics.jsonl",), staged=staged)
        self._sync_seconds = sync_seconds
        self._last_sync = -float("inf")
        # Each run (and resumed run) adds its own event file; the suffix keeps a quick resume from reusing a name.
        events = self._mirror.local / "tensorboard"
        self._writer = SummaryWriter(logdir=str(events), filename_suffix=f".from_step_{start_step}")
        self._jsonl = open(self._mirror.local / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        self._bar = tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)

    def _flush(self) -> None:
        self._writer.flush()
        if time.monotonic() - self._last_sync >= self._sync_seconds:
            self._mirror.sync()
            self._last_sync = time.monotonic()

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
        self._flush()

    def video_grid(self, step: int, tag: str, videos: np.ndarray) -> None:
        """uint8 (N, F, H, W, C) as one image: a row of frames per sample."""
        if not self.enabled:
            return
        n, f, h, w, c = videos.shape
        image = videos.transpose(0, 2, 1, 3, 4).reshape(n * h, f * w, c)
        self._writer.add_image(tag, image, step, dataformats="HWC")
        self._flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
            self._jsonl.close()
            self._mirror.close()


class Throughput:
    """Steps/s, frames/s, the fraction of wall time spent waiting for data, and, given the step's model FLOPs
    per device, model TFLOP/s per device and MFU against the device's peak (where the chip is known), per
    interval."""

    def __init__(self, frames_per_step: int, flops_per_device: float = 0.0, peak_flops: float | None = None):
        self.frames_per_step = frames_per_step
        self.flops_per_device, self.peak_flops = flops_per_device, peak_flops
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
        if self.flops_per_device:
            values["model_tflops_per_device"] = steps_per_second * self.flops_per_device / 1e12
            if self.peak_flops:
                values["mfu"] = steps_per_second * self.flops_per_device / self.peak_flops
        self.reset()
        return values
