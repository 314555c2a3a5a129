"""Training: one loop (:func:`fit`) and checkpoints keyed by the hash of what produced them."""

from training.checkpoint import find_checkpoint, save_checkpoint
from training.fit import OPTIMIZERS, SCHEDULES, fit

__all__ = ["OPTIMIZERS", "SCHEDULES", "find_checkpoint", "fit", "save_checkpoint"]
