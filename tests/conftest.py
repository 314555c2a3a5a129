"""Shared helpers: compose configs like the CLI does, and run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from robustart.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A quickstart shrunk to seconds: a few training steps, 64 samples, 2-step PGD, two severities.
FAST = [
    "experiment=quickstart",
    "training.epochs=0.05",
    "evaluation.max_samples=64",
    "evaluation.batch_size=32",
    "noise.members.pgd_linf.steps=2",
    "noise.members.imagenet_c.severities=[1,5]",
]


_registered: tuple | None = None
_composed: dict[tuple, object] = {}


def compose_config(overrides: list[str], return_hydra_config: bool = False):
    """The config the command line composes from ``overrides``. The schemas are registered again only when the
    noise registry changed (a test may swap a noise's options), and a config composed before is copied from a
    cache: composing costs about 0.15 s, and many tests compose the same overrides. Interpolations such as the
    results folder (``${oc.env:ROBUSTART_RESULTS,...}``) stay unresolved in the copy, so they follow each test's
    environment."""
    global _registered
    import copy

    from robustart.noise import registry

    state = tuple((name, id(entry.options)) for name, entry in sorted(registry._REGISTRY.items()))
    if state != _registered:
        register_configs()
        _registered = state
        _composed.clear()
    key = (tuple(overrides), return_hydra_config)
    if return_hydra_config or key not in _composed:  # the Hydra node holds run-time values: never cached
        with initialize_config_module("robustart.conf", version_base="1.3"):
            cfg = compose("config", overrides, return_hydra_config=return_hydra_config)
        if return_hydra_config:
            return cfg
        _composed[key] = cfg
    return copy.deepcopy(_composed[key])


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole session: checkpoints are keyed by the hash of what trained them, so the
    tests that run the shrunk quickstart share one trained model (and exercise the reuse path) instead of each
    training its own. Tests about training itself use :func:`workspace`'s fresh cache."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture
def shared_workspace(tmp_path, monkeypatch, shared_cache):
    """A fresh results folder with the session's shared cache, also exported for subprocesses."""
    results = tmp_path / "results"
    monkeypatch.setenv("ROBUSTART_RESULTS", str(results))
    monkeypatch.setenv("ROBUSTART_CACHE", str(shared_cache))
    return results, shared_cache


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Fresh results and cache folders, also exported for subprocesses."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    monkeypatch.setenv("ROBUSTART_RESULTS", str(results))
    monkeypatch.setenv("ROBUSTART_CACHE", str(cache))
    return results, cache


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m robustart ARGS`` with the current environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "robustart", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        cwd=REPO,
    )


#: a probe appended to a report page: it records what the browser decoded (images, plots, tables)
RENDER_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const result = {
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    plots: [...document.querySelectorAll("figure.plot")].map((f) => f.dataset.plot),
    tables: document.querySelectorAll("table.compare").length,
    rows: document.querySelectorAll("table.compare tr").length,
  };
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def render_in_chromium(chromium: str, report: str, folder: Path) -> dict:
    """Load ``report`` (HTML text) in headless Chromium and return what the probe recorded."""
    import json
    import re

    page = folder / "check.html"
    page.write_text(report.replace("</body>", RENDER_CHECK + "</body>"))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    found = re.search(r'<pre id="render-check">(.*?)</pre>', proc.stdout)
    assert found, proc.stderr[-2000:]
    return json.loads(found.group(1))


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str, results: Path | None = None) -> None:
    """A command line that ended as a user error: exit status 2, no traceback, each fragment in its output, and
    (with ``results``) no finished run written."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    text = proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in text, text[-2000:]
    if results is not None:
        assert not list(results.glob("*/done"))


def run_dirs(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")) if results.exists() else []


def write_photo_folder(root: Path, wnids=("n01440764", "n02123045"), per_class: int = 2) -> Path:
    """An ImageNet-layout folder of real photographs (scikit-image's samples) saved as JPEG."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    k = 0
    for wnid in wnids:
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for _ in range(per_class):
            Image.fromarray(photos[k % len(photos)]).save(root / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG", quality=90)
            k += 1
    return root


def write_released_imagenet_c(root: Path, photos: Path, corruptions=("contrast", "fog"), severities=(1, 3)) -> Path:
    """An ImageNet-C layout (``<corruption>/<severity>/<wnid>/<image>``) of the ImageNet-layout ``photos`` cut to
    224 px JPEG q85, as the released files are."""
    from PIL import Image

    for c in corruptions:
        for s in severities:
            for src in photos.glob("*/*.JPEG"):
                dest = root / c / str(s) / src.parent.name / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(src) as img:
                    img.convert("RGB").resize((224, 224)).save(dest, quality=85)
    return root


@pytest.fixture(scope="session")
def fashion_subset_model(tmp_path_factory):
    """A small CNN trained briefly on real Fashion-MNIST (2 epochs of 6000 images), and 256 test images with labels."""
    import torch

    from robustart import model_zoo
    from robustart.data import load_fashion_mnist
    from robustart.training import fit

    cache = tmp_path_factory.mktemp("cache")
    train, _ = load_fashion_mnist(None, cache, "train")
    test, _ = load_fashion_mnist(None, cache, "test")
    torch.manual_seed(0)
    model = model_zoo.create_model("small_cnn")
    fit(model, train.subset(6000), epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.1, seed=0)
    x = torch.stack([test[i][0] for i in range(256)])
    y = torch.stack([test[i][1] for i in range(256)])
    return model.eval(), x, y
