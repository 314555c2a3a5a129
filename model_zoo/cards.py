"""robustart training checkpoints as weights: a folder with ``model.safetensors`` and its JSON card.

The card (written by :func:`robustart.training.save_checkpoint`) names the zoo entry that was trained, the
training config hash, the recipe, the data and the weights file's sha256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_FILE = "checkpoint.json"


def read_card(path: str | Path) -> dict[str, Any] | None:
    """The card of the checkpoint at ``path`` (its folder or its ``checkpoint.json``) with ``path`` set to the
    weights file, or ``None`` when ``path`` is not a checkpoint (a plain weights file, or nothing)."""
    path = Path(path).expanduser()
    card_path = path / CARD_FILE if path.is_dir() else path
    if card_path.name != CARD_FILE or not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
        card["path"] = str(card_path.parent / card["weights"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{card_path} is not a readable robustart checkpoint card: {err}") from None
    return card


def trained_entry(card: dict[str, Any]) -> str:
    """The zoo entry whose weights the checkpoint holds (``nas_supernet`` for a supernet trained for subnets)."""
    return card.get("entry") or card.get("model", {}).get("name", "?")
