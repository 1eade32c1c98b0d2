"""A diffusers Wan 2.1 text-to-video folder -> one Orbax checkpoint of its transformer, VAE and UMT5 encoder.

`pyoco-convert` reads transformer/, vae/, text_encoder/ and tokenizer/ (and scheduler/ if there) once. The
transformer must be the experiment config's DiT (as `train.init_from` checks it); every tensor of each component
must fill its model exactly, checked before anything is written. Tensors keep their stored dtype (Wan ships
bfloat16), renamed and laid out as ours (`convert.converted` shows the output's files). The output then serves
as `train.init_from`, `vae.path` and `text.path`, read without PyTorch names again.
"""

from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.convert.clip import filled_model
from pyoco_jax.convert.converted import check_whole_pipeline, summary_counts, write_converted
from pyoco_jax.convert.umt5 import load_umt5_params, load_umt5_tokenizer
from pyoco_jax.convert.wan_transformer import check_wan_architecture, read_wan_params
from pyoco_jax.convert.wan_vae import load_wan_vae_params
from pyoco_jax.models.dit import WanTransformer
from pyoco_jax.models.text.umt5 import UMT5Encoder
from pyoco_jax.models.vae.wan import WanVAE

COMPONENTS = ("transformer", "vae", "text_encoder")


def _checked(build: Callable[[], nnx.Module], params: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """`params`, once they fill `build()` exactly (else a ConversionError naming what is missing or left over)."""
    filled_model(build, params, what)
    return params


def convert_wan_pipeline(source: str | Path, config: ml_collections.ConfigDict, out: str | Path) -> dict:
    """Converts the Wan pipeline folder `source` into `out` for `config`'s DiT; returns the summary per component."""
    source, out = Path(source), Path(out)
    check_whole_pipeline(source, COMPONENTS, "Wan")
    check_wan_architecture(config, source / "transformer", "--diffusers")
    wan, transformer = read_wan_params(source / "transformer")
    vae_config, vae = load_wan_vae_params(source / "vae")
    text_config, text = load_umt5_params(source / "text_encoder")
    load_umt5_tokenizer(source)  # A readable tokenizer with its special tokens, before anything is written.
    params = {
        "transformer": _checked(lambda: WanTransformer(wan, rngs=nnx.Rngs(0)), transformer, "the Wan transformer"),
        "vae": _checked(lambda: WanVAE(vae_config, rngs=nnx.Rngs(0)), vae, "the Wan VAE"),
        "text_encoder": _checked(lambda: UMT5Encoder(text_config, rngs=nnx.Rngs(0)), text, "the UMT5 encoder"),
    }
    summary = {name: summary_counts(None, component) for name, component in params.items()}
    write_converted(source, out, params, summary, config)
    return summary
