"""CLIP's byte-level BPE tokenizer, giving the ids transformers' `CLIPTokenizer` (5.x) gives.

No file IO and no dependency beyond numpy: `pyoco_jax.convert.clip.load_tokenizer` reads a
checkpoint's files into a `ClipTokenizer`. The steps, in transformers' order:

1. special tokens (start/end of text, pad, unk and any added ones) are cut out of the raw text;
2. each other span is normalised: Unicode NFC, whitespace runs -> one space, lowercase per
   character (so a final capital sigma becomes 'σ', not 'ς');
3. it is split into words: contractions ('s 't 're 've 'm 'll 'd), letter runs, single digits
   and runs of other non-space characters; a start/end-of-text string that survives step 1
   (e.g. typed in capitals) splits into '<|', its name, '|>';
4. each word's UTF-8 bytes map to printable characters, the last one gets '</w>', and
   merges apply lowest rank first (leftmost among equals) until none applies.

transformers 5.x runs CLIP through the `tokenizers` library: no ftfy and no HTML unescaping
(which OpenAI's reference tokenizer does), whatever is installed. A pad token that is an ordinary
character (SD 2.x pads with '!') is a special token too, so that character in a prompt maps to
its bare id, as transformers does. Letters and digits are told apart with Python's Unicode
tables; characters newer than those tables may be classed differently than by transformers.
"""

import functools
import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"
CONTEXT_LENGTH = 77
# The `tokenizers` library's regex whitespace (\s), which unlike Python's excludes \x1c-\x1f.
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def byte_alphabet() -> list[str]:
    """The printable character standing for each byte 0..255 (GPT-2/CLIP byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[byte] for byte in range(256)]


def normalize(text: str) -> str:
    """NFC, whitespace runs -> ' ', per-character lowercase."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    return "".join(char.lower() for char in text)


def _kind(char: str) -> str:
    if char == " ":
        return "space"
    category = unicodedata.category(char)[0]
    return {"L": "letter", "N": "number"}.get(category, "other")


def split_words(text: str) -> list[str]:
    """A normalised span -> the words BPE runs on (CLIP's pre-tokenisation pattern)."""
    words, i = [], 0
    while i < len(text):
        marker = next((m for m in (START_OF_TEXT, END_OF_TEXT) if text.startswith(m, i)), None)
        if marker is not None:
            words += ["<|", marker[2:-2], "|>"]
            i += len(marker)
            continue
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if contraction is not None:
            words.append(contraction)
            i += len(contraction)
            continue
        kind = _kind(text[i])
        if kind == "space":
            i += 1
            continue
        end = i + 1
        if kind != "number":  # digits are words of one; letter and other runs extend
            while end < len(text) and _kind(text[end]) == kind:
                end += 1
        words.append(text[i:end])
        i = end
    return words


class ClipTokenizer:
    """Prompts -> (B, max_length) int32 ids: start token, up to max_length - 2 BPE ids, end token, padding.

    `vocab`: token -> id; `merges`: BPE merge pairs, highest priority first; `special_tokens`:
    strings cut out of raw text as single ids beyond the four named ones (e.g. added tokens).
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Iterable[tuple[str, str]],
        *,
        bos_token: str = START_OF_TEXT,
        eos_token: str = END_OF_TEXT,
        pad_token: str = END_OF_TEXT,
        unk_token: str = END_OF_TEXT,
        special_tokens: Mapping[str, int] | None = None,
        max_length: int = CONTEXT_LENGTH,
    ):
        self.vocab = dict(vocab)
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, (left, right) in enumerate(merges):
            missing = [t for t in (left, right, left + right) if t not in self.vocab]
            if missing:
                raise ValueError(f"BPE merge {rank} ({left!r} {right!r}) uses tokens missing from the vocab: {missing}")
            self.ranks[(left, right)] = rank  # a repeated pair keeps its last rank, as transformers does
        named = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
        missing = {key: token for key, token in named.items() if token not in self.vocab}
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocab")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} leaves no room for the start and end tokens")
        self.bos_id, self.eos_id = self.vocab[bos_token], self.vocab[eos_token]
        self.pad_id, self.unk_id = self.vocab[pad_token], self.vocab[unk_token]
        self.max_length = max_length
        self.special = {token: self.vocab[token] for token in named.values()} | dict(special_tokens or {})
        # Longest first, so an alternation matches the longest special token at the leftmost place.
        alternatives = sorted(self.special, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._byte_chars = byte_alphabet()
        self._word_ids = functools.lru_cache(maxsize=1 << 16)(self._bpe)

    def _bpe(self, word: str) -> tuple[int, ...]:
        symbols = [self._byte_chars[b] for b in word.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        while len(symbols) > 1:
            rank, i = min((self.ranks.get(pair, math.inf), i) for i, pair in enumerate(itertools.pairwise(symbols)))
            if rank == math.inf:
                break
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return tuple(self.vocab.get(symbol, self.unk_id) for symbol in symbols)

    def tokenize(self, text: str) -> list[int]:
        """The ids of `text` without start/end tokens, padding or truncation."""
        ids = []
        for index, span in enumerate(self._special_pattern.split(text)):
            if index % 2:  # odd entries are the special tokens the split kept
                ids.append(self.special[span])
            else:
                for word in split_words(normalize(span)):
                    ids.extend(self._word_ids(word))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """(B, max_length) int32 ids of `texts` (a string counts as a batch of one)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.full((len(texts), self.max_length), self.pad_id, dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.bos_id, *self.tokenize(text)[: self.max_length - 2], self.eos_id]
            out[row, : len(ids)] = ids
        return out
