"""ClipTokenizer against transformers.CLIPTokenizer (5.x, `tokenizers` backend; ftfy not installed) on one vocab."""

import json
import shutil

import numpy as np
import pytest
import transformers

from pyoco_jax.convert.clip import load_tokenizer
from pyoco_jax.models.text.tokenizer import ClipTokenizer
from tests.models.clip_testing import CORPUS, save_vocab

PROMPTS = [
    "",
    "a cat",
    "A Photograph of an ASTRONAUT riding a horse",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\u00a0no-break\u3000ideographic spaces",
    "punctuation!!! ?!? ... --- (brackets) [x] {y} <z> @#$%^&*_+=|\\/~`",
    "numbers 1234567890 3.14159 1e-5 120fps 4k 1,000,000",
    "contractions: it's don't we're they've i'm we'll he'd IT'S 'sun''s '' 's",
    "unicode: café naïve Ünïcödé ΟΔΟΣ ς straße ﬁ İstanbul 日本語のテキスト 한국어 עברית العربية",
    "emoji 🙂🚀👩‍🚀 and combining e\u0301 a\u0308 and zero\u200bwidth",
    "control chars \x1c\x1d\x1e\x1f\x00\x07 end",
    "html &amp; &lt;tag&gt; stays as is",
    "<|startoftext|>explicit markers<|endoftext|> inside<|endoftext|>!",
    "<|ENDOFTEXT|>! markers in capitals split <|StartOfText|>x",
    "!<|endoftext|> x<|startoftext|>y",
    "hello! world! !! trailing bang!",
    " ".join(CORPUS),  # far beyond 77 tokens: truncation
    "word " * 200,
]


def _fuzz(count: int, seed: int = 0) -> list[str]:
    """Random mixes of corpus words, letters, digits, punctuation, odd spaces, unicode and markers."""
    rng = np.random.default_rng(seed)
    words = " ".join(CORPUS).split()
    pieces = words + list("aeiouxyz0123456789!?.,;:'\"-()[]&/\\") + [
        "'s", "'ll", "'RE", " ", "  ", "\t", "\n", "\u00a0", "\u2003", "\x1f", "é", "Ω", "Σ", "ß", "ǅ", "日", "🙂",
        "\u0301", "<|endoftext|>", "<|startoftext|>", "<|EndOfText|>", "<|", "|>", "İ", "ﬀ", "Ⅻ", "٣", "½",
    ]  # fmt: skip
    return ["".join(rng.choice(pieces, size=rng.integers(0, 40))) for _ in range(count)]


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory):
    return save_vocab(tmp_path_factory.mktemp("clip_vocab"))


def _reference(vocab_files, **kwargs) -> transformers.CLIPTokenizer:
    vocab_file, merges_file = vocab_files
    return transformers.CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77, **kwargs)


def _reference_ids(tokenizer: transformers.CLIPTokenizer, texts: list[str]) -> np.ndarray:
    return np.array(tokenizer(texts, padding="max_length", max_length=77, truncation=True)["input_ids"])


@pytest.mark.parametrize("pad_token", ["<|endoftext|>", "!"], ids=["sd1-pad-eos", "sd2-pad-bang"])
def test_ids_equal_transformers_for_both_folder_layouts(tmp_path, vocab_files, pad_token):
    reference = _reference(vocab_files, pad_token=pad_token)
    saved = tmp_path / "saved"  # what transformers 5 writes: tokenizer.json + tokenizer_config.json
    reference.save_pretrained(saved)
    legacy = tmp_path / "legacy"  # what SD checkpoints ship: vocab.json + merges.txt + configs
    legacy.mkdir()
    for file in vocab_files:
        shutil.copy(file, legacy / file.name)
    config = json.loads((saved / "tokenizer_config.json").read_text())
    (legacy / "tokenizer_config.json").write_text(json.dumps(config))
    (legacy / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": pad_token}}))

    texts = PROMPTS + _fuzz(300)
    expected = _reference_ids(reference, texts)
    for folder in (saved, legacy):
        ours = load_tokenizer(folder)
        assert ours.max_length == 77
        got = ours(texts)
        assert got.dtype == np.int32 and got.shape == (len(texts), 77)
        mismatched = [t for t, a, b in zip(texts, got, expected, strict=True) if not np.array_equal(a, b)]
        assert not mismatched, f"{folder.name}: {len(mismatched)} prompts differ, e.g. {mismatched[:3]!r}"
    # The test must see real merges, truncation and padding, not just byte tokens.
    assert (expected >= 512).mean() > 0.1 and expected[PROMPTS.index("word " * 200), -1] == reference.eos_token_id


def test_empty_prompt_is_start_end_padding(vocab_files):
    tokenizer = load_tokenizer(vocab_files[0].parent)
    ids = tokenizer(["", "a"])
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    np.testing.assert_array_equal(ids[0], [bos, eos] + [eos] * 75)
    assert ids.shape == (2, 77) and tokenizer("a").shape == (1, 77)


def test_bad_vocabulary_is_refused(vocab_files):
    vocab = json.loads(vocab_files[0].read_text())
    with pytest.raises(ValueError, match="missing from the vocab"):
        ClipTokenizer(vocab, [("q", "zz</w>")])
    with pytest.raises(ValueError, match="not in the vocab"):
        ClipTokenizer(vocab, [], pad_token="<pad>")
