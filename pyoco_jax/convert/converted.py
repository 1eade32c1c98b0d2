"""A `pyoco-convert` output: writing its files, finding its marker, and one component's params from its checkpoint.

    OUT/params/                         one Orbax checkpoint, an item per component (our names and layouts)
    OUT/<component>/config.json         each component's original config (so its family and architecture read
                                        as the source's), OUT/tokenizer/* the tokenizer files
    OUT/scheduler/scheduler_config.json the source's scheduler config, if it has one
    OUT/pyoco_pipeline.json             the experiment config and what was loaded or new, per component

Kept apart from the converters (`convert/pipeline.py`, `convert/wan_pipeline.py`) because every loader reads
converted folders, while only the converters need all the loaders.
"""

import json
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from pyoco_jax.convert.merge import ConversionError, LoadReport

MARKER = "pyoco_pipeline.json"
PARAMS = "params"
TOKENIZER = "tokenizer"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"


def check_whole_pipeline(source: Path, components: tuple[str, ...], family: str) -> None:
    """Every component folder and the tokenizer are in `source` (else one error naming those missing)."""
    missing = [part for part in (*components, TOKENIZER) if not (source / part).is_dir()]
    if missing:
        raise ConversionError(f"{source} is not a whole {family} pipeline folder: no {', '.join(missing)}/")


def summary_counts(report: LoadReport | None, params: dict[str, np.ndarray]) -> dict:
    """Tensor and parameter counts of one converted component, and which were loaded or new."""
    count = sum(int(v.size) for v in params.values())
    if report is None:
        return {"tensors": len(params), "params": count, "loaded": count, "new": 0, "new_tensors": []}
    return {
        "tensors": len(params),
        "params": count,
        "loaded": report.loaded_count,
        "new": report.new_count,
        "new_tensors": report.new,
    }


def write_converted(
    source: Path, out: Path, params: dict[str, dict[str, np.ndarray]], summary: dict, config: ml_collections.ConfigDict
) -> None:
    """Writes `out` (replaced if it exists) with the items of `params` (component -> dotted name -> array), their
    config.json files, the tokenizer and scheduler config of `source`, and the marker holding `summary`."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        args = ocp.args.Composite(**{name: ocp.args.StandardSave(value) for name, value in params.items()})
        checkpointer.save(epath.Path(out).resolve() / PARAMS, args)
    for part in params:
        (out / part).mkdir()
        shutil.copy(source / part / "config.json", out / part / "config.json")
    shutil.copytree(source / TOKENIZER, out / TOKENIZER)
    if (source / SCHEDULER_CONFIG).is_file():
        (out / SCHEDULER_CONFIG).parent.mkdir()
        shutil.copy(source / SCHEDULER_CONFIG, out / SCHEDULER_CONFIG)
    marker = {"version": 1, "source": str(source), "config": json.loads(config.to_json()), "summary": summary}
    (out / MARKER).write_text(json.dumps(marker, indent=2))
    logging.info("converted %s -> %s: %s", source, out, json.dumps(summary))


def converted_root(folder: str | Path) -> Path | None:
    """The converted pipeline holding `folder` (itself or its parent, e.g. OUT/vae), or None."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        if (candidate / MARKER).exists():
            return candidate
    return None


def read_component(folder: str | Path, component: str) -> dict[str, np.ndarray]:
    """One component's params (dotted names, our layouts) from the converted pipeline holding `folder`."""
    root = converted_root(folder)
    if root is None:
        raise ConversionError(f"{folder} is not part of a pyoco-convert output (no {MARKER})")
    item = ocp.args.Composite(**{component: ocp.args.StandardRestore()})
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(epath.Path(root).resolve() / PARAMS, item)
    return {name: np.asarray(value) for name, value in restored[component].items()}
