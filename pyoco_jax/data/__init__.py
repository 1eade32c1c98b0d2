"""Data: sources (synthetic moving shapes; more to come), the grain loader, video files.

Kept import-light: grain worker processes import the sources without pulling in JAX.
"""
