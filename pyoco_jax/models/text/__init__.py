"""Text encoders. CLIP: the one that conditions SD-style U-Nets (encoder.py), its BPE tokenizer (tokenizer.py),
and the image tower that joins it in the two-tower model CLIPSIM scores with (clip.py). UMT5: Wan 2.1's
(umt5*.py), its tokenizer read from the model folder's tokenizer.json."""

from pyoco_jax.models.text.clip import ClipModel, VisionEncoder, VisionEncoderConfig
from pyoco_jax.models.text.encoder import TextEncoder, TextEncoderConfig
from pyoco_jax.models.text.tokenizer import ClipTokenizer
from pyoco_jax.models.text.umt5 import UMT5Config, UMT5Encoder

__all__ = [
    "ClipModel",
    "ClipTokenizer",
    "TextEncoder",
    "TextEncoderConfig",
    "UMT5Config",
    "UMT5Encoder",
    "VisionEncoder",
    "VisionEncoderConfig",
]
