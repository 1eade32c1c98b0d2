"""Studies: sweeps with their own evaluation and report (docs/*.md), reproducible with one command."""
