"""UMT5's SentencePiece-style tokenizer, run by the `tokenizers` library from a tokenizer.json.

Prompts are cleaned as Wan's pipeline cleans them (`clean_prompt`), then become fixed-length ids
and masks as transformers' `tokenizer(prompts, padding="max_length", truncation=True, max_length=...)`
returns them: an end token appended (as transformers' T5Tokenizer always adds), truncated to
`max_length` with the end token kept, padded on the right. Cleaning first also makes the file's
own pipeline and transformers 5's rebuilt T5Tokenizer (which splits on every whitespace) agree on
tabs, newlines and space runs.
"""

import html
import re
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer, processors

MAX_LENGTH = 512  # Wan 2.1's max_sequence_length
_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: HTML entities unescaped (twice), whitespace runs -> one space, ends stripped.

    Wan runs ftfy's `fix_text` first (mojibake repaired, curly quotes straightened, full-width letters
    narrowed, ...); ftfy is not a dependency here, so prompts with such characters may tokenize differently.
    """
    return _WHITESPACE.sub(" ", html.unescape(html.unescape(text))).strip()


class UMT5Tokenizer:
    """prompts -> (ids, mask), both (B, max_length) int32; mask is 1 on tokens (end token included)."""

    def __init__(
        self, tokenizer: Tokenizer, *, eos_token: str = "</s>", pad_token: str = "<pad>", max_length: int = MAX_LENGTH
    ):
        ids = {token: tokenizer.token_to_id(token) for token in (eos_token, pad_token)}
        missing = [token for token, index in ids.items() if index is None]
        if missing:
            raise ValueError(f"the tokenizer's vocabulary lacks the special tokens {missing}")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} leaves no room for a token besides the end token")
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: padding settings stay ours
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {eos_token}", special_tokens=[(eos_token, ids[eos_token])]
        )
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding(length=max_length, pad_id=ids[pad_token], pad_token=pad_token)

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask) of `prompts` (a string counts as a batch of one), cleaned first."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        encodings = self._tokenizer.encode_batch([clean_prompt(p) for p in prompts], add_special_tokens=True)
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(prompts), self.max_length)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int32).reshape(ids.shape)
        return ids, mask
