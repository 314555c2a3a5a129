"""What produced a result: library versions, git commit, device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

# distribution name -> manifest key
_VERSIONED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "torchattacks": "torchattacks",
    "pyautoattack": "autoattack",
    "pillow": "Pillow",
    "opencv-python": "OpenCV",
    "opencv-python-headless": "OpenCV",
    "av": "PyAV",
    "numpy": "numpy",
    "hydra-core": "hydra",
    "pyarrow": "pyarrow",
}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in _VERSIONED.items():
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions.setdefault(key, None)
    return versions


def git_commit() -> str | None:
    """The project's commit (with ``-dirty`` when the tree has changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def device_description(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
