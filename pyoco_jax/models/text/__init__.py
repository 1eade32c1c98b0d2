"""CLIP: the text encoder that conditions SD-style U-Nets (encoder.py) and its BPE tokenizer (tokenizer.py),
and the image tower that joins it in the two-tower model CLIPSIM scores with (clip.py)."""

from pyoco_jax.models.text.clip import ClipModel, VisionEncoder, VisionEncoderConfig
from pyoco_jax.models.text.encoder import TextEncoder, TextEncoderConfig
from pyoco_jax.models.text.tokenizer import ClipTokenizer

__all__ = ["ClipModel", "ClipTokenizer", "TextEncoder", "TextEncoderConfig", "VisionEncoder", "VisionEncoderConfig"]
