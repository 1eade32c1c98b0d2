"""Inference shared by the trainer and the CLIs: sampling inputs, the jitted sampler, decoding, video files."""
