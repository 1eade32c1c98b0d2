"""The shape classifier behind `pyoco-sample --shape_accuracy` tells shapes apart, not colours or noise."""

import functools

import numpy as np

from pyoco_jax.data.synthetic import SyntheticVideoSource
from pyoco_jax.evaluate.shape_accuracy import shape_accuracy, train_shape_classifier

SOURCE = SyntheticVideoSource(600, 4, 32, num_classes=4, max_objects=1, shape_size=(0.2, 0.32), seed=3)


@functools.cache
def _classifier():
    return train_shape_classifier(SOURCE, train_clips=256, held_out_clips=64, steps=250)


def _clips(indices) -> tuple[np.ndarray, np.ndarray]:
    elements = [SOURCE[i] for i in indices]
    return np.stack([e["video"] for e in elements]), np.array([e["label"] for e in elements])


def test_real_clips_are_named_and_wrong_labels_are_not():
    classifier = _classifier()
    assert classifier.held_out_accuracy >= 0.95
    videos, labels = _clips(range(500, 564))  # Never seen while training.
    assert shape_accuracy(classifier, videos, labels) >= 0.95
    assert shape_accuracy(classifier, videos, (labels + 1) % 4) <= 0.1


def test_noise_and_blank_frames_are_not_shapes():
    classifier = _classifier()
    videos, labels = _clips(range(500, 564))
    rng = np.random.default_rng(0)
    noisy = np.clip(videos + rng.normal(0.0, 15.0, videos.shape), 0, 255).astype(np.uint8)
    assert shape_accuracy(classifier, noisy, labels) >= 0.9  # Mild noise: the shapes still count.
    background = np.broadcast_to(videos[:, :1, :1, :1], videos.shape)  # One flat colour per clip.
    assert shape_accuracy(classifier, np.ascontiguousarray(background), labels) <= 0.5  # Chance is 0.25.
