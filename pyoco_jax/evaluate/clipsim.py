"""CLIPSIM: how well generated clips match their prompts, as in the MSR-VTT protocol (PYoCo, MagicVideo, Make-A-Video).

    CLIPSIM(clip, prompt) = mean over frames f of cos(image_features(frame f), text_features(prompt))

with a CLIP model's projected (transformers `get_image_features` / `get_text_features`) embeddings;
the benchmark number is the mean over clips (`summary` adds a 95% confidence half-width). Plain
cosine, not x100 and not clipped at 0. Prompts longer than the text tower's 77 tokens are truncated.

Frames are preprocessed as transformers' `CLIPImageProcessor` (PIL backend) does: shortest side
resized to `image_size` with bicubic resampling (the long side to int(size * long / short)),
centre crop `image_size` (offset (length - size) // 2), x / 255, then (x - mean) / std with CLIP's
mean and std. The resize is `jax.image.resize(method="cubic", antialias=True)`: Keys' cubic with
a = -0.5, the kernel widened by the factor when shrinking and renormalised over the taps inside the
image at the borders, which is PIL's BICUBIC filter. Like PIL's 8-bit path it runs as two 1-D passes,
each rounded half up and clipped to [0, 255] (a pass is skipped when its length does not change),
in Pillow 13's order: width first, unless the height shrinks by more than twice as many pixels as
the width does, then height first (Pillow < 13 always went width first; the two differ only for
frames more than about twice as tall as wide, and only where the first pass clips). What still
differs from PIL: its weights are 22-bit fixed point, these float32, so a few pixels land one level
(of 255) apart, two where both passes round apart (`tests/evaluate/test_clipsim.py` bounds it).
torchvision's bicubic (a = -0.75, transformers' default backend when torchvision is installed) is
not what is matched; original CLIP used PIL.
"""

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pyoco_jax.convert.clip import checked_ids
from pyoco_jax.convert.clip_model import load_clip_model
from pyoco_jax.models.text.clip import ClipModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
Z_95 = 1.959964  # two-sided 95% normal quantile


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) with the shorter side = `size` and the longer int(size * long / short), as transformers."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _pil_pass(x: jax.Array, axis: int, length: int) -> jax.Array:
    """One PIL-like bicubic pass along `axis` to `length`, rounded half up and clipped to uint8 levels."""
    if x.shape[axis] == length:
        return x
    shape = list(x.shape)
    shape[axis] = length
    y = jax.image.resize(x, tuple(shape), method="cubic", antialias=True)
    return jnp.clip(jnp.floor(y + 0.5), 0, 255)


def preprocess(frames: jax.Array, size: int) -> jax.Array:
    """uint8 frames (B, H, W, 3) -> CLIP inputs (B, size, size, 3) float32 (see the module docstring)."""
    height, width = frames.shape[1:3]
    new_height, new_width = resized_shape(height, width, size)
    passes = [(2, new_width), (1, new_height)]  # (axis, length): width first, as PIL ...
    if 0 < height - new_height and 2 * (width - new_width) < height - new_height:
        passes.reverse()  # ... unless the height shrinks much more (Pillow 13's ImagingResampleInner)
    x = frames.astype(jnp.float32)
    for axis, length in passes:
        x = _pil_pass(x, axis, length)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    x = x[:, top : top + size, left : left + size] / 255.0
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def _unit(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@nnx.jit
def _image_embeddings(model: ClipModel, frames: jax.Array) -> jax.Array:
    return _unit(model.image_features(preprocess(frames, model.vision_model.config.image_size)))


@nnx.jit
def _text_embeddings(model: ClipModel, ids: jax.Array) -> jax.Array:
    return _unit(model.text_features(ids))


class ClipScorer:
    """Per-clip CLIPSIM with a transformers `CLIPModel` folder (e.g. openai/clip-vit-base-patch32).

    Frames go through the model `frame_batch` at a time (the last batch padded, so one compile per
    frame size); `dtype` is the compute dtype (float32 to match published numbers).
    """

    def __init__(
        self, path: str | Path, *, frame_batch: int = 64, dtype: jnp.dtype = jnp.float32, allow_pickle: bool = False
    ):
        if frame_batch < 1:
            raise ValueError(f"frame_batch={frame_batch} must be at least 1")
        self.model, self.tokenizer = load_clip_model(path, dtype=dtype, allow_pickle=allow_pickle)
        self.frame_batch = frame_batch

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """Unit-length text embeddings (N, P)."""
        ids = checked_ids(self.model.text_model.config, self.tokenizer, list(prompts))
        return np.asarray(_text_embeddings(self.model, jnp.asarray(ids)))

    def image_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """Unit-length embeddings (B, P) of uint8 frames (B, H, W, 3), any H and W."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {frames.shape}")
        out = []
        for start in range(0, len(frames), self.frame_batch):
            chunk = frames[start : start + self.frame_batch]
            padded = np.concatenate([chunk, np.zeros((self.frame_batch - len(chunk), *chunk.shape[1:]), np.uint8)])
            out.append(np.asarray(_image_embeddings(self.model, jnp.asarray(padded)))[: len(chunk)])
        return np.concatenate(out)

    def __call__(self, videos: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """CLIPSIM (N,) float64 of uint8 clips (N, F, H, W, 3) against their `prompts` (N strings)."""
        videos, prompts = np.asarray(videos), list(prompts)
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"videos must be uint8 (N, F, H, W, 3), got {videos.dtype} {videos.shape}")
        if len(prompts) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
        clips, frames = videos.shape[:2]
        images = self.image_embeddings(videos.reshape(clips * frames, *videos.shape[2:]))
        texts = self.text_embeddings(prompts)
        cosines = np.einsum("nfp,np->nf", images.reshape(clips, frames, -1).astype(np.float64), texts)
        return cosines.mean(axis=1)


def summary(scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(mean, 95% confidence half-width) of per-clip scores: normal approximation, Z_95 * s / sqrt(n)
    with the sample standard deviation s (ddof=1); the t quantile would be at most 4% wider for n >= 30."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"need at least 2 per-clip scores (N,), got shape {scores.shape}")
    return float(scores.mean()), float(Z_95 * scores.std(ddof=1) / np.sqrt(len(scores)))
