"""Benchmarks: training-step time and MFU, peer comparisons (see README.md)."""
