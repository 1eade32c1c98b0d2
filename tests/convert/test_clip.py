"""CLIP folders -> TextEncoder/ClipTokenizer: checkpoint layouts, refused files, errors, prompts -> context."""

import json
import shutil

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx

from pyoco_jax.convert.clip import encode_prompts, load_text_encoder, load_tokenizer
from pyoco_jax.convert.merge import ConversionError
from tests.models.clip_testing import TINY_TEXT_ENCODER as CONFIG
from tests.models.clip_testing import save_text_encoder, save_vocab


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A pipeline-like folder: text_encoder/ (transformers 5 save) and tokenizer/ (SD-style vocab + merges)."""
    root = tmp_path_factory.mktemp("pipeline")
    reference = save_text_encoder(root / "text_encoder", **CONFIG)
    save_vocab(root / "tokenizer")
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return root, reference


def _values(model: nnx.Module) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def _copy_config(source, folder):
    folder.mkdir()
    shutil.copy(source / "text_encoder" / "config.json", folder / "config.json")
    return safetensors.numpy.load_file(source / "text_encoder" / "model.safetensors")


def test_prompts_to_context_equal_transformers(pipeline):
    root, reference = pipeline
    encoder, tokenizer = load_text_encoder(root), load_tokenizer(root)  # pipeline folder: finds both parts
    prompts = ["", "A cat on the MOON, 4k!", "it's a beautiful day " * 30]
    context = encode_prompts(encoder, tokenizer, prompts)
    assert context.shape == (3, 77, CONFIG["hidden_size"])
    ids = transformers.CLIPTokenizer(
        vocab=str(root / "tokenizer" / "vocab.json"), merges=str(root / "tokenizer" / "merges.txt")
    )(prompts, padding="max_length", max_length=77, truncation=True)["input_ids"]
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).last_hidden_state.numpy()
    assert float(np.abs(np.asarray(context) - expected).max()) < 1e-4
    # The null condition of guidance is the encoding of "" (start, end, padding), whatever else is in the batch.
    assert (
        float(np.abs(np.asarray(context[0]) - expected[0]).max()) < 1e-4
        and np.abs(expected[0] - expected[1]).max() > 0.1
    )


def test_mismatched_tokenizer_and_encoder_fail_clearly(pipeline, tmp_path):
    root, _ = pipeline
    encoder = load_text_encoder(root / "text_encoder")
    with pytest.raises(ValueError, match="max_length=77"):
        encode_prompts(encoder, load_tokenizer(root, max_length=80), "a cat")
    save_text_encoder(tmp_path, **{**CONFIG, "vocab_size": 300})
    with pytest.raises(ValueError, match="different models"):
        encode_prompts(load_text_encoder(tmp_path), load_tokenizer(root), "the photograph")


def test_legacy_names_buffers_and_half_precision(pipeline, tmp_path):
    """transformers < 5 names (`text_model.` prefix, a position_ids buffer), float16 storage."""
    root, _ = pipeline
    tensors = _copy_config(root, tmp_path / "legacy")
    legacy = {f"text_model.{k}": v.astype(np.float16) for k, v in tensors.items()}
    legacy["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    safetensors.numpy.save_file(legacy, tmp_path / "legacy" / "model.safetensors")
    loaded = _values(load_text_encoder(tmp_path / "legacy"))
    expected = _values(load_text_encoder(root / "text_encoder"))
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], value.astype(np.float16).astype(np.float32), err_msg=name)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.pop("encoder.layers.1.mlp.fc1.weight"),
            r"missing from the checkpoint: encoder.layers.1.mlp.fc1.kernel",
        ),
        (lambda t: t.update({"encoder.layers.2.mlp.fc1.bias": np.zeros(64, np.float32)}), r"no place.*layers.2.mlp"),
        (lambda t: t.update({"text_projection.weight": np.zeros((8, 32), np.float32)}), r"no place.*text_projection"),
        (lambda t: t.update({"final_layer_norm.weight": np.ones(31, np.float32)}), r"shape mismatch.*final_layer_norm"),
    ],
    ids=["missing", "extra-layer", "projection-head", "shape"],
)
def test_tensors_that_do_not_fit_are_named(pipeline, tmp_path, edit, message):
    root, _ = pipeline
    tensors = _copy_config(root, tmp_path / "edited")
    edit(tensors)
    safetensors.numpy.save_file(tensors, tmp_path / "edited" / "model.safetensors")
    with pytest.raises(ConversionError, match=message):
        load_text_encoder(tmp_path / "edited")


def test_pickle_only_on_request_and_bad_folders(pipeline, tmp_path):
    root, reference = pipeline
    _copy_config(root, tmp_path / "pickled")
    torch.save(reference.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="allow_pickle=True"):
        load_text_encoder(tmp_path / "pickled")
    loaded = _values(load_text_encoder(tmp_path / "pickled", allow_pickle=True))
    expected = _values(load_text_encoder(root))
    assert all(np.array_equal(loaded[k], v) for k, v in expected.items())

    with pytest.raises(ConversionError, match="no config.json"):
        load_text_encoder(tmp_path)
    (tmp_path / "pickled" / "pytorch_model.bin").unlink()
    with pytest.raises(ConversionError, match="no model.safetensors"):
        load_text_encoder(tmp_path / "pickled")
    with pytest.raises(ConversionError, match="no tokenizer.json, nor vocab.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "pickled" / "config.json").write_text(json.dumps({**CONFIG, "hidden_act": "swish"}))
    with pytest.raises(ConversionError, match="hidden_act"):
        load_text_encoder(tmp_path / "pickled")
