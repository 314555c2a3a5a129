"""Checkpoints: safetensors weights plus a JSON card (recipe, config hash, data, metrics, sha256)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from robustart.model_zoo.cards import CARD_FILE, read_card

WEIGHTS_FILE = "model.safetensors"


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (same folder, so the rename is atomic).

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(directory: str | Path, net: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``net``'s state dict as ``model.safetensors`` and ``card`` (plus the file's sha256) as JSON.

    The card is written last, so a directory with a card always has complete weights.
    """
    from safetensors.torch import save_file

    from robustart.model_zoo.weights import sha256_file

    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp))
    card = {**card, "weights": WEIGHTS_FILE, "sha256": sha256_file(weights)}
    atomic_write(directory / CARD_FILE, lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=True)))
    return weights


def find_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The card of a complete checkpoint in ``directory`` (with ``path`` added), or None."""
    return read_card(directory) if Path(directory).is_dir() else None
