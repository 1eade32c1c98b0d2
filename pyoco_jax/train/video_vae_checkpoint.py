"""A fine-tuned VideoVAE on disk: its parameters (Orbax) and its architecture (JSON), side by side.

<directory>/params/              Orbax checkpoint of the VideoVAE's parameters
<directory>/architecture.json    VAEConfig, TemporalDecoderSpec and num_frames, to rebuild it
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from pyoco_jax.models.layers import Precision
from pyoco_jax.models.vae.config import VAEConfig
from pyoco_jax.models.vae.video import TemporalDecoderSpec, VideoVAE

PARAMS = "params"
ARCHITECTURE = "architecture.json"


def save_video_vae(directory: str | epath.PathLike, model: VideoVAE) -> epath.Path:
    """Writes `model` to `directory` (local or gs://, replacing what is there); returns the directory."""
    directory = epath.Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS, nnx.to_pure_dict(nnx.state(model, nnx.Param)), force=True)
    checkpointer.wait_until_finished()
    architecture = {
        "vae": dataclasses.asdict(model.config),
        "temporal": dataclasses.asdict(model.spec),
        "num_frames": model.num_frames,
    }
    (directory / ARCHITECTURE).write_text(json.dumps(architecture, indent=2))
    return directory


def load_video_vae(
    directory: str | epath.PathLike, *, dtype: str | jnp.dtype = jnp.float32, backend: str = "xla"
) -> VideoVAE:
    """The VideoVAE that `save_video_vae` wrote to `directory` (float32 params, compute in `dtype`)."""
    directory = epath.Path(directory).resolve()
    if not (directory / ARCHITECTURE).exists() or not (directory / PARAMS).exists():
        raise FileNotFoundError(f"{directory} holds no VideoVAE checkpoint ({ARCHITECTURE} and {PARAMS}/)")
    architecture = json.loads((directory / ARCHITECTURE).read_text())
    config = VAEConfig(
        **{**architecture["vae"], "block_out_channels": tuple(architecture["vae"]["block_out_channels"])}
    )
    spec = TemporalDecoderSpec(**architecture["temporal"])
    model = nnx.eval_shape(
        lambda: VideoVAE(
            config,
            spec,
            num_frames=int(architecture["num_frames"]),
            precision=Precision(jnp.dtype(dtype)),
            backend=backend,
            rngs=nnx.Rngs(0),
        )
    )
    state = nnx.state(model, nnx.Param)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.to_pure_dict(state))
    restored = ocp.StandardCheckpointer().restore(directory / PARAMS, target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return model
