"""Experiment configs (YAML), one per target; shipped in the wheel so `--config NAME` works anywhere."""
