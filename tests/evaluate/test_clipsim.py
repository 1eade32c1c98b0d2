"""CLIPSIM against transformers (CLIPImageProcessor, PIL backend + CLIPModel + CLIPTokenizer) on a tiny random CLIP."""

import numpy as np
import pytest
import torch
import transformers

from pyoco_jax.evaluate.clipsim import CLIP_STD, ClipScorer, preprocess, summary
from tests.models.clip_testing import TINY_VISION_ENCODER, save_clip_model

SIZE = TINY_VISION_ENCODER["image_size"]
PROMPTS = ["a cat on the moon, 4k", "two dogs playing fetch in a park", "an underwater scene with colourful fish"]
# Our resize vs PIL's: PIL's 22-bit fixed-point weights round a few pixels one level (of 255) apart,
# two where both passes do. Measured on these shapes: at most 2 levels, on at most 0.7% of the values.
MAX_LEVELS, MAX_FRACTION = 2, 0.01
# Cosines from the same pixels: float32 model parity (measured 3e-8).
COSINE_TOLERANCE = 1e-5
# Cosines from each side's own preprocessing, where a few pixels sit a level apart (measured 2e-8).
CLIPSIM_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    reference = save_clip_model(folder)
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    tokenizer = transformers.CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    return ClipScorer(folder, frame_batch=5), reference, processor, tokenizer


def _pixels(processor, frames: np.ndarray) -> np.ndarray:
    """transformers' CLIP inputs for uint8 frames (B, H, W, 3), channels-last."""
    return processor(images=list(frames), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x if isinstance(x, torch.Tensor) else x.pooler_output  # transformers 5 returns a model output
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


def _reference_clipsim(reference, processor, tokenizer, videos, prompts, pixels=None) -> np.ndarray:
    """Mean over frames of cos(image, text) with transformers end to end (or on the given `pixels`)."""
    clips, frames = videos.shape[:2]
    pixels = _pixels(processor, videos.reshape(-1, *videos.shape[2:])) if pixels is None else pixels
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        images = _unit(reference.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))))
        texts = _unit(reference.get_text_features(input_ids=ids))
    return np.einsum("nfp,np->nf", images.reshape(clips, frames, -1), texts).mean(axis=1)


@pytest.mark.parametrize(
    "shape",
    [(40, 56), (56, 40), (24, 20), (SIZE, SIZE), (100, 33), (90, 44)],
    ids=["landscape", "portrait", "upsampled", "unchanged", "tall-height-first", "tall-width-first"],
)
def test_preprocess_matches_clip_image_processor(clip, shape):
    _, _, processor, _ = clip
    rng = np.random.default_rng(sum(shape))
    noise = rng.integers(0, 256, size=(2, *shape, 3), dtype=np.uint8)  # cubic overshoot clips in every pass
    y, x = np.mgrid[: shape[0], : shape[1]]
    smooth = np.stack([127 + 120 * np.sin(x / 7 + c + y / 11) for c in range(3)], -1).astype(np.uint8)
    frames = np.concatenate([noise, smooth[None]])
    want, got = _pixels(processor, frames), np.asarray(preprocess(frames, SIZE))
    assert got.shape == want.shape == (3, SIZE, SIZE, 3)
    levels = np.abs(got - want) * np.asarray(CLIP_STD) * 255  # back in units of uint8 levels
    assert levels.max() < MAX_LEVELS + 1e-3
    assert (levels > 1e-3).mean() < MAX_FRACTION


def test_clipsim_equals_transformers(clip):
    scorer, reference, processor, tokenizer = clip
    videos = np.random.default_rng(0).integers(0, 256, size=(3, 4, 40, 56, 3), dtype=np.uint8)
    ours = scorer(videos, PROMPTS)
    assert ours.shape == (3,)
    expected = _reference_clipsim(reference, processor, tokenizer, videos, PROMPTS)
    assert np.abs(ours - expected).max() < CLIPSIM_TOLERANCE
    # From identical pixels the model alone is compared, much tighter.
    pixels = _pixels(processor, videos.reshape(-1, 40, 56, 3))
    texts = scorer.text_embeddings(PROMPTS)
    images = np.asarray(scorer.model.image_features(pixels))
    images = images / np.linalg.norm(images, axis=-1, keepdims=True)
    same_pixels = np.einsum("nfp,np->nf", images.reshape(3, 4, -1), texts).mean(axis=1)
    want_same = _reference_clipsim(reference, processor, tokenizer, videos, PROMPTS, pixels)
    assert np.abs(same_pixels - want_same).max() < COSINE_TOLERANCE
    # The scores tell clips apart (else the comparison above would prove little).
    assert np.ptp(expected) > 1e-2


def test_repeated_frame_and_batching(clip):
    scorer, *_ = clip
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 1, 36, 36, 3), dtype=np.uint8)
    single = scorer(frames, PROMPTS[:2])
    repeated = scorer(np.repeat(frames, 7, axis=1), PROMPTS[:2])  # 14 frames: 3 batches of 5, the last padded
    np.testing.assert_allclose(repeated, single, atol=1e-6)
    # Clip i's score is its own frames' against its own prompt, whatever else is in the call.
    swapped = scorer(frames[::-1], PROMPTS[:2][::-1])
    np.testing.assert_allclose(swapped, single[::-1], atol=1e-6)
    assert np.all(np.abs(single) <= 1)


def test_summary_and_errors(clip):
    scorer, *_ = clip
    mean, half_width = summary([0.30, 0.32, 0.28, 0.34])
    assert mean == pytest.approx(0.31)
    assert half_width == pytest.approx(1.959964 * np.std([0.30, 0.32, 0.28, 0.34], ddof=1) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        summary([0.3])
    video = np.zeros((1, 2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        scorer(video.astype(np.float32), PROMPTS[:1])
    with pytest.raises(ValueError, match="prompts"):
        scorer(video, PROMPTS[:2])
