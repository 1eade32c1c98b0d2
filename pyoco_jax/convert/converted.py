"""Reading a `pyoco-convert` output: where its marker is, and one component's params from its Orbax checkpoint.

Kept apart from the writer (`convert/pipeline.py`) because every loader reads converted folders, while
only the writer needs all the loaders.
"""

from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from pyoco_jax.convert.merge import ConversionError

MARKER = "pyoco_pipeline.json"
PARAMS = "params"
COMPONENTS = ("unet", "vae", "text_encoder")


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
