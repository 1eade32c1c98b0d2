"""A transformers CLIPModel folder -> ClipModel + tokenizer: features equal transformers', refused and broken files."""

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from pyoco_jax.convert.clip_model import load_clip_model
from pyoco_jax.convert.merge import ConversionError
from tests.models.clip_testing import TINY_VISION_ENCODER, save_clip_model

# float32 on both sides, as the towers' own parity tests.
TOLERANCE = 1e-4
PROMPTS = ["", "a cat on the MOON, 4k!", "two dogs playing fetch in a park " * 12]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return folder, save_clip_model(folder)


def _features(output) -> np.ndarray:
    """transformers 5 returns a model output with the projected `pooler_output`, older ones the tensor."""
    return (output if isinstance(output, torch.Tensor) else output.pooler_output).numpy()


def test_features_equal_transformers(clip_folder):
    folder, reference = clip_folder
    model, tokenizer = load_clip_model(folder)
    size = TINY_VISION_ENCODER["image_size"]
    images = np.random.default_rng(0).normal(size=(3, size, size, 3)).astype(np.float32)
    ids = transformers.CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))(
        PROMPTS, padding="max_length", max_length=77, truncation=True
    )["input_ids"]
    np.testing.assert_array_equal(tokenizer(PROMPTS), ids)
    with torch.no_grad():
        want_images = _features(
            reference.get_image_features(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
        )
        want_texts = _features(reference.get_text_features(input_ids=torch.tensor(ids)))
    got_images, got_texts = np.asarray(model.image_features(images)), np.asarray(model.text_features(np.array(ids)))
    assert got_images.shape == want_images.shape == (3, 16) and got_texts.shape == want_texts.shape == (3, 16)
    image_error, text_error = np.abs(got_images - want_images).max(), np.abs(got_texts - want_texts).max()
    assert image_error < TOLERANCE and text_error < TOLERANCE
    assert float(model.logit_scale[...]) == pytest.approx(reference.logit_scale.item())


def _copy(folder, destination, change):
    """`folder`'s config and tokenizer with its tensors passed through `change` (dict -> dict)."""
    destination.mkdir()
    for file in folder.iterdir():
        if file.name != "model.safetensors":
            (destination / file.name).write_bytes(file.read_bytes())
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    safetensors.numpy.save_file(change(tensors), destination / "model.safetensors")
    return destination


def test_legacy_buffers_loaded_and_broken_checkpoints_refused(clip_folder, tmp_path):
    folder, _ = clip_folder
    size = TINY_VISION_ENCODER["image_size"]
    images = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    expected = np.asarray(load_clip_model(folder)[0].image_features(images))

    # transformers < 5 saved the position_ids buffers: ignored.
    buffers = lambda t: (
        t
        | {
            "text_model.embeddings.position_ids": np.arange(77)[None],
            "vision_model.embeddings.position_ids": np.arange(17)[None],
        }
    )
    legacy, _ = load_clip_model(_copy(folder, tmp_path / "legacy", buffers))
    np.testing.assert_array_equal(np.asarray(legacy.image_features(images)), expected)

    # The class token is a "new" name merge_params would leave fresh in a video model: not here.
    no_class = lambda t: {k: v for k, v in t.items() if "class_embedding" not in k}
    with pytest.raises(ConversionError, match="class_embedding"):
        load_clip_model(_copy(folder, tmp_path / "no_class", no_class))
    no_projection = lambda t: {k: v for k, v in t.items() if k != "visual_projection.weight"}
    with pytest.raises(ConversionError, match="visual_projection.kernel"):
        load_clip_model(_copy(folder, tmp_path / "no_projection", no_projection))
    extra = lambda t: t | {"vision_model.extra.weight": np.zeros((2, 2), np.float32)}
    with pytest.raises(ConversionError, match="vision_model.extra"):
        load_clip_model(_copy(folder, tmp_path / "extra", extra))


def test_pickle_only_with_allow_pickle(clip_folder, tmp_path):
    folder, reference = clip_folder
    pickled = _copy(folder, tmp_path / "pickled", lambda t: t)
    (pickled / "model.safetensors").unlink()
    torch.save(reference.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="allow_pickle"):
        load_clip_model(pickled)
    model, tokenizer = load_clip_model(pickled, allow_pickle=True)
    expected, _ = load_clip_model(folder)
    ids = tokenizer(PROMPTS)
    np.testing.assert_array_equal(np.asarray(model.text_features(ids)), np.asarray(expected.text_features(ids)))


def test_not_a_clip_model_folder(tmp_path):
    with pytest.raises(ConversionError, match="no config.json"):
        load_clip_model(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_size": 32}')
    with pytest.raises(ConversionError, match="text_config and vision_config"):
        load_clip_model(tmp_path)
