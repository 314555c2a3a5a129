"""Training: one loop (:func:`fit`) for every recipe and technique, and checkpoints keyed by the hash of what
produced them."""

from robustart.training.checkpoint import find_checkpoint, save_checkpoint
from robustart.training.fit import OPTIMIZERS, SCHEDULES, check_recipe, fit, load_state

__all__ = ["OPTIMIZERS", "SCHEDULES", "check_recipe", "find_checkpoint", "fit", "load_state", "save_checkpoint"]
