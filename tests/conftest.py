"""Every helper shared by test files: compose configs like the CLI does, run the CLI in a subprocess, shared
caches and workspaces, real sample images, and results folders written as runs write them. Test files import
helpers from here only, never from one another; they sit in folders that mirror the packages they test
(``tests/noise``, ``tests/evaluation``, ``tests/model_zoo``, ``tests/training``, ``tests/robustart``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from robustart import store
from robustart.config import register_configs
from robustart.evaluation.metrics import wilson_interval

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


def pytest_configure(config):
    """A parallel run (pytest-xdist's ``-n``) gives each worker its share of the cores, through the environment
    the workers start with: torch, the BLAS libraries and the programs a test starts read it when they load, and
    two workers of two threads each on two cores spend much of their time waiting for one another. A count set
    by hand is kept."""
    workers = len(getattr(config.option, "tx", None) or []) if getattr(config.option, "dist", "no") != "no" else 0
    if workers and "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, before it starts the workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, str(max(1, cores // workers)))


def pytest_collection_modifyitems(config, items):
    """The slow tests first, otherwise in their order: the workers take tests from one queue in this order
    (``--maxschedchunk 1`` in ``pyproject.toml``), and a test of a few minutes started last keeps one core busy
    while the others have nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


# ------------------------------------------------------------- helpers shared by several test files


@contextmanager
def torch_threads(count: int):
    """Torch's intra-op thread count set to ``count`` inside the block, and put back after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch single-threaded here: on a shared 2-core runner a second intra-op thread mostly waits for a
    busy core (several times slower), and the comparisons are per image anyway."""
    with torch_threads(1):
        yield


def fit_photo(photo: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centre crop to the aspect ratio ``h : w``, then resize to ``h x w`` (uint8 RGB)."""
    from PIL import Image

    ph, pw = photo.shape[:2]
    scale = min(ph / h, pw / w)
    ch, cw = round(h * scale), round(w * scale)
    top, left = (ph - ch) // 2, (pw - cw) // 2
    crop = Image.fromarray(photo[top : top + ch, left : left + cw])
    return np.asarray(crop.resize((w, h), Image.BILINEAR)).copy()


def foolbox_samples(prefix: str) -> list[tuple[Path, int]]:
    from importlib.util import find_spec

    spec = find_spec("foolbox")  # located, not imported: only its data files are used
    assert spec is not None, "foolbox (a dev dependency) is not installed"
    folder = Path(spec.submodule_search_locations[0]) / "data"
    files = sorted(p for p in folder.iterdir() if p.name.startswith(prefix + "_"))
    assert len(files) == 20, f"foolbox should ship 20 {prefix} samples, found {len(files)}"
    return [(p, int(p.stem.rsplit("_", 1)[1])) for p in files]  # names end in the label


def cifar10_samples() -> tuple[torch.Tensor, torch.Tensor]:
    samples = foolbox_samples("cifar10")
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p, _ in samples])
    return x.float() / 255, torch.tensor([label for _, label in samples])


GENES = [c for c in store.model_columns() if c.startswith("nas_")]
EPS = [0.5 / 255, 2 / 255, 8 / 255]
#: what schema 4 added to metrics.parquet: the protocol columns, the unit and interval method, the split weights
V4_COLUMNS = {*store.PROTOCOL_COLUMNS, "unit", "ci_method", "weights_source", "weights_id"}


def metric_row(noise, metric, condition, k=None, n=200, value=None, severity=None, eps=None, **protocol) -> dict:
    """A metric row: a proportion ``k / n`` with its Wilson interval, or a ``value`` without one; ``protocol``:
    the protocol columns a real run fills (norm, steps, param_set...)."""
    if k is not None:
        low, high = wilson_interval(k, n)
        value = k / n
    else:
        low = high = math.nan
    return dict(noise=noise, metric=metric, condition=condition, severity=severity, eps=eps, value=value, n=n,
                ci_low=low, ci_high=high, ci_method="wilson" if k is not None else "none", **protocol)  # fmt: skip


def pgd(steps: int = 10, eps: float = 8 / 255, **extra) -> dict:
    """The protocol columns of a PGD-Linf row at ``eps`` (step size eps / 4, one restart, random start)."""
    return dict(norm="Linf", steps=steps, restarts=1, step_size=eps / 4, random_start=True, targeted=False, **extra)


def metric_rows(top1: int, robust: list[int], corrupt: list[int], n: int = 200, steps: int = 10) -> list[dict]:
    """A quickstart-like run: clean top-1/top-5, PGD-Linf (``steps``) at three budgets, two corruptions at
    severities 1 and 5, and system noise summaries (``sys_std`` has no interval). Counts are correct samples out
    of ``n``."""
    rows = [metric_row("clean", "top1", "clean", top1, n), metric_row("clean", "top5", "clean", min(top1 + 30, n), n)]
    for eps, k in zip(EPS, robust):
        rows += [metric_row("pgd_linf", "robust_acc", "pgd_linf", k, n, eps=eps, **pgd(steps, eps)),
                 metric_row("pgd_linf", "ar", "pgd_linf", min(k, top1), top1, eps=eps, **pgd(steps, eps))]  # fmt: skip
    for (corruption, severity), k in zip([("gaussian_noise", 1), ("gaussian_noise", 5), ("contrast", 1),
                                          ("contrast", 5)], corrupt):  # fmt: skip
        rows.append(metric_row("imagenet_c", "acc", corruption, k, n, severity=severity, param_set="cifar"))
    rows += [
        metric_row("imagenet_s", "sys_mean", None, top1 - 10, n),
        metric_row("imagenet_s", "sys_std", None, value=0.03, n=n),
    ]
    return rows


def write_run(
    results,
    model,
    family,
    rows,
    *,
    subnet=None,
    version=store.SCHEMA_VERSION,
    done=True,
    data="fashion_mnist",
    run_id=None,
    recipe="none",
    input_size=28,
    weights="robustart:0123456789ab",
):
    """A run folder ``<model>-quickstart-<data>-<id>`` holding ``rows`` as metrics.parquet, a manifest and, with
    ``done``, the marker. Older schema ``version``s leave out what they lacked: 1 the model columns, 1-2 the
    shape-bias category, 1-3 the protocol columns, ``unit``, ``ci_method`` and the split weights."""
    run_id = run_id or f"{abs(hash((model, subnet, recipe, len(rows), str(rows[0]['value'])))) % 16**10:010x}"
    genes = {}
    if subnet is not None:
        from robustart.model_zoo import nas

        genes = nas.decode(subnet).as_dict(28)
    frame = pd.DataFrame(rows)
    for column in ["category", *store.PROTOCOL_COLUMNS, "ci_method"]:
        if column not in frame:
            frame[column] = None
    if "unit" not in frame:
        frame["unit"] = ["percent" if m in ("ce", "mce", "relative_mce", "mce_unnormalized") else "fraction"
                         for m in frame["metric"]]  # fmt: skip
    source, weights_id = store.split_weights(weights)
    frame = frame.assign(
        run_id=run_id, model=model, family=family, weights=weights, weights_source=source,
        weights_id=weights_id, params=100_000, flops=10_000_000 + (subnet or 0) % 1000, input_size=input_size,
        subnet=subnet, data=data, recipe=recipe, **{c: genes.get(c.removeprefix("nas_")) for c in GENES},
    )  # fmt: skip
    for column in ["severity", "subnet", "steps", "restarts", *store.model_columns()]:
        frame[column] = frame[column].astype("Int64")
    for column in ("random_start", "targeted"):
        frame[column] = frame[column].astype("boolean")
    frame["step_size"] = frame["step_size"].astype(float)
    schema = store.metrics_schema()
    lacking = {1: {*store.model_columns(), "category", *V4_COLUMNS}, 2: {"category", *V4_COLUMNS},
               3: V4_COLUMNS}.get(version, set())  # fmt: skip
    if lacking:
        schema = pa.schema([f for f in schema if f.name not in lacking],
                           metadata={b"robustart_schema_version": str(version).encode()})  # fmt: skip
    folder = results / f"{model}-quickstart-{data}-{run_id}"
    folder.mkdir(parents=True)
    store.write_table(frame, schema, folder / store.METRICS_FILE)
    store.write_json({"schema_version": version, "run_id": run_id}, folder / store.MANIFEST_FILE)
    if done:
        store.mark_done(folder)
    return folder


def zoo_of_runs(results, subnets: bool = False):
    """Runs of three families (two CNNs, a ViT twice, a Mixer), and with ``subnets`` three NAS subnets."""
    write_run(results, "small_resnet", "cnn", metric_rows(170, [160, 120, 40], [160, 120, 150, 60]))
    write_run(results, "cifar_resnet18", "cnn", metric_rows(176, [170, 130, 30], [170, 100, 160, 50]))
    write_run(results, "small_vit", "transformer", metric_rows(150, [145, 130, 90], [148, 130, 140, 100]))
    write_run(results, "small_vit", "transformer", metric_rows(154, [150, 128, 80], [150, 128, 140, 96]))
    write_run(results, "small_mixer", "mlp", metric_rows(140, [130, 110, 70], [138, 110, 130, 90]))
    if subnets:
        for i, subnet in enumerate((0, 56440825, 1377495071)):
            write_run(results, "nas_subnet", "nas", metric_rows(150 + 5 * i, [140, 100 + 10 * i, 30 + 15 * i],
                      [150, 110, 140, 70 + 5 * i]), subnet=subnet)  # fmt: skip


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustart.compare", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)  # fmt: skip


def assert_compare_error(proc, fragment: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr


# ------------------------------------------------------------------------- a study's sweep, as Hydra expands it


def sweep_params(experiment: str) -> dict[str, str]:
    cfg = compose_config([f"experiment={experiment}"], return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params or {})


def swept_values(experiment: str) -> dict[str, list[str]]:
    """``{key: [value, ...]}`` as Hydra's basic sweeper expands ``hydra.sweeper.params``."""
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweep_params(experiment).items()])
    values = {}
    for override in overrides:
        assert override.is_discrete_sweep() or not override.is_sweep_override(), override.input_line
        key = override.get_key_element()
        if override.is_sweep_override():
            values[key] = list(override.sweep_string_iterator())
        else:
            values[key] = [override.get_value_element_as_str()]
    return values


def sweep_jobs(experiment: str, cli: tuple[str, ...] = ()) -> list[list[str]]:
    """The jobs ``python -m robustart -m experiment=NAME CLI...`` launches, each as its list of overrides."""
    lines = [f"{k}={v}" for k, v in sweep_params(experiment).items()] + [f"experiment={experiment}", *cli]
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    return batch
