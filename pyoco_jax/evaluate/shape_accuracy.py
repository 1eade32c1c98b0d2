"""Whether sampled clips show the shape they were asked for.

Looking at a few samples is no measure; a small classifier trained on the embedded
dataset's own frames is. It names the shape in every frame of a sampled clip, and the
clip counts as right when the frames' average prediction is the requested class.
Chance is 1 / num_classes. Pixel noise is added while training, so the classifier
judges shapes, not the sampler's leftover noise texture.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pyoco_jax.data.synthetic import SyntheticVideoSource
from pyoco_jax.errors import UserError


class _ShapeNet(nnx.Module):
    """Four convolutions (two strided) and a linear head over mean- and max-pooled features."""

    def __init__(self, num_classes: int, rngs: nnx.Rngs):
        self.convs = nnx.List(
            [
                nnx.Conv(3, 32, (3, 3), rngs=rngs),
                nnx.Conv(32, 32, (3, 3), strides=2, rngs=rngs),
                nnx.Conv(32, 64, (3, 3), strides=2, rngs=rngs),
                nnx.Conv(64, 64, (3, 3), rngs=rngs),
            ]
        )
        self.head = nnx.Linear(128, num_classes, rngs=rngs)

    def __call__(self, frames: jax.Array) -> jax.Array:
        x = frames
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.head(jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1))


@dataclasses.dataclass
class ShapeClassifier:
    """A trained classifier of single frames, uint8 (N, H, W, 3) -> logits (N, num_classes)."""

    model: _ShapeNet
    num_classes: int
    held_out_accuracy: float  # On frames of clips it never saw, without added noise.

    def frame_logits(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(_logits(self.model, _to_float(frames)))

    def clip_probabilities(self, videos: np.ndarray) -> np.ndarray:
        """The frames' mean class probabilities per clip: uint8 (B, F, H, W, 3) -> float (B, num_classes)."""
        batch, frames = videos.shape[:2]
        logits = self.frame_logits(videos.reshape(batch * frames, *videos.shape[2:]))
        return np.asarray(jax.nn.softmax(logits.reshape(batch, frames, -1), axis=-1).mean(axis=1))

    def clip_predictions(self, videos: np.ndarray) -> np.ndarray:
        """Class per clip, from the frames' mean probabilities: uint8 (B, F, H, W, 3) -> int (B,)."""
        return self.clip_probabilities(videos).argmax(-1)


@nnx.jit
def _logits(model: _ShapeNet, frames: jax.Array) -> jax.Array:
    return model(frames)


def _to_float(frames: np.ndarray) -> jax.Array:
    return jnp.asarray(frames, jnp.float32) / 127.5 - 1.0


def _frames_and_labels(source: SyntheticVideoSource, indices: range) -> tuple[np.ndarray, np.ndarray]:
    elements = [source[i] for i in indices]  # Each clip rendered once.
    videos = [element["video"] for element in elements]
    labels = [np.full(len(element["video"]), element["label"]) for element in elements]
    return np.concatenate(videos), np.concatenate(labels)


def train_shape_classifier(
    source: SyntheticVideoSource,
    *,
    train_clips: int = 384,
    held_out_clips: int = 64,
    steps: int = 300,
    batch_size: int = 64,
    noise_std: float = 0.15,
    seed: int = 0,
) -> ShapeClassifier:
    """Trains on the first `train_clips` clips of `source` and scores the next `held_out_clips`."""
    if source.num_classes < 2:
        raise UserError("shape accuracy needs a class-conditional source (data.num_classes >= 2)")
    if len(source) < train_clips + held_out_clips:
        raise UserError(
            f"the shape classifier trains on {train_clips + held_out_clips} clips but the data has {len(source)}; "
            f"set data.num_examples to at least {train_clips + held_out_clips}"
        )
    frames, labels = _frames_and_labels(source, range(train_clips))
    test_frames, test_labels = _frames_and_labels(source, range(train_clips, train_clips + held_out_clips))
    model = _ShapeNet(source.num_classes, nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, frames, labels, key):
        noisy = frames + noise_std * jax.random.uniform(key, (len(frames), 1, 1, 1)) * jax.random.normal(
            jax.random.fold_in(key, 1), frames.shape
        )

        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(noisy), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    for index in range(steps):
        pick = rng.integers(0, len(frames), batch_size)
        step(model, optimizer, _to_float(frames[pick]), jnp.asarray(labels[pick]), jax.random.fold_in(key, index))
    classifier = ShapeClassifier(model, source.num_classes, 0.0)
    accuracy = float((classifier.frame_logits(test_frames).argmax(-1) == test_labels).mean())
    return dataclasses.replace(classifier, held_out_accuracy=accuracy)


def shape_accuracy(classifier: ShapeClassifier, videos: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of clips whose shape the classifier names as the requested label."""
    return float((classifier.clip_predictions(videos) == np.asarray(labels)).mean())
