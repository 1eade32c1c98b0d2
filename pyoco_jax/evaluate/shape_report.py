"""Shape accuracy and colour drift of sampled synthetic-shape clips, next to the same figures for real clips."""

import ml_collections
import numpy as np

from pyoco_jax.data.loader import make_source
from pyoco_jax.errors import UserError
from pyoco_jax.evaluate.binomial import wilson_interval
from pyoco_jax.evaluate.colour_drift import colour_drift
from pyoco_jax.evaluate.shape_accuracy import ShapeClassifier, shape_accuracy, train_shape_classifier


def check_shape_model(config: ml_collections.ConfigDict) -> None:
    """Only a class-conditional model of the synthetic shapes has a shape to name."""
    if config.data.source != "synthetic" or config.model.num_classes == 0:
        raise UserError("shape metrics need a class-conditional model of the synthetic shapes")


def shape_classifier(config: ml_collections.ConfigDict) -> ShapeClassifier:
    """The classifier of the run's synthetic shapes, trained on a source seeded apart from the run's (seed + 1)."""
    check_shape_model(config)
    return train_shape_classifier(make_source(config.data, seed=config.seed + 1))


def shape_metrics(
    config: ml_collections.ConfigDict,
    videos: np.ndarray,
    labels: np.ndarray,
    classifier: ShapeClassifier | None = None,
) -> dict[str, float]:
    """{shape_accuracy, classifier_accuracy, colour_drift, real_colour_drift} of `videos` asked to show `labels`.

    `classifier`: one from `shape_classifier(config)` to reuse (default: trained here).
    """
    classifier = classifier or shape_classifier(config)
    source = make_source(config.data, seed=config.seed + 1)
    real = np.stack([source[i]["video"] for i in range(min(len(source), len(labels)))])
    return {
        "shape_accuracy": shape_accuracy(classifier, videos, labels),
        "classifier_accuracy": classifier.held_out_accuracy,
        "colour_drift": colour_drift(videos),
        "real_colour_drift": colour_drift(real),
    }


def format_shape_metrics(metrics: dict[str, float], num_clips: int, num_classes: int) -> str:
    low, high = wilson_interval(round(metrics["shape_accuracy"] * num_clips), num_clips)
    return (
        f"shape accuracy: {metrics['shape_accuracy']:.1%} of {num_clips} clips show the requested shape (chance "
        f"{1 / num_classes:.0%}; 95% Wilson interval {low:.1%}-{high:.1%}; the classifier scores "
        f"{metrics['classifier_accuracy']:.1%} on real frames)\n"
        f"colour drift: {metrics['colour_drift']:.3f} (mean RGB distance of a frame's shape colour from its clip's "
        f"average; real clips {metrics['real_colour_drift']:.3f})"
    )
