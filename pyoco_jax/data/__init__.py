"""Data: sources (synthetic moving shapes, video folders, TFDS datasets of encoded videos), the grain
loader, clip decoding and video files.

Sources are kept free of JAX imports; the loader turns their elements into global jax.Arrays.
"""
