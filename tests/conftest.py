"""Shared settings for the package tests (the chapters are tested by nbval)."""
from hypothesis import settings

# Derandomized: CI must be reproducible; each example is a 20-step training run.
settings.register_profile("optim_nb", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("optim_nb")
