"""Metrics of generated and reconstructed video."""
