"""robustart's Hydra config groups, shipped as package data and found by Hydra as ``pkg://robustart.conf``."""
