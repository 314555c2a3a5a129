"""``robustart.evaluate``: score any model on any data under any noise, from Python, on the engine the command
line uses (:mod:`robustart.engine`).

>>> results = robustart.evaluate(model, dataset, {"pgd_linf": {"eps": ["8/255"], "steps": 10}})
>>> results.metrics.query("metric == 'robust_acc'")

With ``results_dir`` the run is written as a command-line run is (tables, manifest, ``done``; resumable and
readable by ``python -m robustart.compare``), and a second call with the same arguments returns the finished
run's tables. One process at a time evaluates a run there: another waits for it (``if_locked="wait"``) or raises
(``"exit"``), see :mod:`robustart.locking`. Without it the run happens in a temporary folder and only the tables
come back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustart import locking, store
from robustart.errors import UserError
from robustart.identity import noise_kwargs, stable_hash

log = logging.getLogger("robustart")

#: options of :func:`evaluate` besides the model's preprocessing (see :func:`robustart.models.wrap_module`)
EVALUATION_OPTIONS = {"batch_size": 128, "num_workers": 0, "device": "auto", "amp": None, "channels_last": False,
                      "max_samples": None, "seed": 0, "data_name": None, "noise_name": None, "weights": "random",
                      "cache_dir": None, "if_locked": "wait"}  # fmt: skip


@dataclass
class Results:
    """What :func:`evaluate` returns: the run's tables (pandas frames in the Parquet files' schemas), its manifest,
    and its folder (``None`` when no ``results_dir`` was given)."""

    metrics: Any
    predictions: Any
    manifest: dict
    run_dir: Path | None
    #: ``True`` when the run was already finished in ``results_dir`` and its tables were read back
    cached: bool = False

    def value(self, metric: str, **where) -> float:
        """The one value of ``metric`` in rows matching ``where`` (``noise=``, ``condition=``, ``eps=``...)."""
        rows = self.metrics[self.metrics["metric"] == metric]
        for column, wanted in where.items():
            rows = rows[rows[column] == wanted]
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} rows of metric {metric!r} with {where}; narrow it down")
        return float(rows["value"].iloc[0])


def evaluate(model, data, noise="clean", *, results_dir: str | Path | None = None, **options) -> Results:
    """Evaluate ``model`` on ``data`` clean and under ``noise``.

    Args:
        model: a zoo name (``"resnet50"``), a zoo model, or any ``nn.Module`` taking float RGB in [0, 1]; its
            preprocessing comes from ``input_size``, ``mean``, ``std``, ``crop_pct``, ``interpolation`` (defaults:
            the data's size, mean 0, std 1, no crop), or from a timm model's ``pretrained_cfg``. ``name`` and
            ``family`` (``cnn``, ``transformer``, ``mlp``, ``nas``; default ``cnn``) label it in the results.
        data: a ``Dataset`` or ``DataLoader`` of ``(image, label)`` or ``(image, label, sample_id)`` (CHW, uint8 or
            float in [0, 1]), a folder of class folders, or ``"fashion_mnist"``.
        noise: a noise name, a list of names, ``{name: {option: value}}``, or ``Noise`` objects.
        results_dir: where to write the run (resumable; skipped when finished); ``None``: nowhere.
        **options: ``batch_size`` (128), ``device`` (``auto``), ``max_samples``, ``amp``, ``channels_last``,
            ``num_workers``, ``seed``, ``data_name``, ``noise_name``, ``weights`` (of a zoo name), ``cache_dir``,
            ``if_locked`` (``wait``: when another process evaluates the same run in ``results_dir``, wait for it and
            return its tables, or resume if it died; ``exit``: raise :class:`robustart.locking.RunLocked`, a
            ``UserError`` naming it), and the preprocessing options above.

    Raises:
        UserError: an input that cannot work (unknown noise or option, data the model cannot take, a results
            folder that cannot be written), before any work.
    """
    from robustart import engine
    from robustart.models import MODEL_OPTIONS, prepare_model
    from robustart.plan import resolve_device

    unknown = sorted(set(options) - set(EVALUATION_OPTIONS) - set(MODEL_OPTIONS))
    if unknown:
        valid = ", ".join(sorted({*EVALUATION_OPTIONS, *MODEL_OPTIONS}))
        raise UserError(f"robustart.evaluate takes no option(s) {unknown}; its options: {valid}")
    opts = {**EVALUATION_OPTIONS, **{k: v for k, v in options.items() if k in EVALUATION_OPTIONS}}
    model_opts = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
    if opts["batch_size"] < 1:
        raise UserError(f"batch_size must be >= 1, got {opts['batch_size']}")
    if opts["max_samples"] is not None and opts["max_samples"] < 1:
        raise UserError(f"max_samples must be a positive number or None (all), got {opts['max_samples']}")
    locking.check_if_locked(opts["if_locked"], "if_locked")
    t_start = time.monotonic()
    built_noise, noise_name, noise_identity = build_noises(noise, opts["noise_name"])
    device = resolve_device(str(opts["device"]))
    dataset, info = _dataset(data, model, model_opts, opts)
    model, weights = prepare_model(model, dataset, info, model_opts, opts["weights"])
    meta = model.metadata
    if meta.num_classes < info.num_classes:
        raise UserError(
            f"the model has {meta.num_classes} outputs but the data has labels up to {info.num_classes - 1}"
        )

    identity = {
        "model": {**meta.as_dict(), "params": None, "flops": None, "weights": weights},
        "data": {"name": info.name, "fingerprint": _fingerprint(dataset), "num_samples": len(dataset)},
        "noise": noise_identity,
        "evaluation": {"batch_size": opts["batch_size"], "max_samples": opts["max_samples"], "amp": opts["amp"]},
        "seed": opts["seed"],
    }
    run_id = stable_hash(identity)
    folder_name = f"{meta.name}-{noise_name}-{info.name}-{run_id}"
    temporary, lock = None, None
    if results_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="robustart-")
        run_dir = Path(temporary.name) / folder_name
    else:
        run_dir = Path(results_dir).expanduser() / folder_name
        if store.finished(run_dir):
            return _cached(run_dir)
        store.check_writable(run_dir.parent, "results_dir")
    config = {"api": "robustart.evaluate", "options": {k: str(v) for k, v in opts.items()}, **identity}
    job = engine.Job(
        run_id=run_id, run_dir=run_dir, model=model, weights=weights, data=dataset, data_info=info,
        data_name=info.name, noise=built_noise, device=device, batch_size=opts["batch_size"],
        num_workers=opts["num_workers"], amp=opts["amp"], channels_last=opts["channels_last"], config=config,
        identity=identity, seeds={"run": opts["seed"], "training": None},
    )  # fmt: skip
    if temporary is None:
        lock = locking.acquire(run_dir, run_id, opts["if_locked"])  # one process at a time evaluates a run
        if store.finished(run_dir, warn=False):  # by the process this one waited for
            lock.release()
            return _cached(run_dir)
        store.unmark_done(run_dir)  # a marker over missing or unreadable tables: the run is redone
    torch.manual_seed(opts["seed"])
    try:
        tables = engine.evaluate(job, t_start=t_start)
    finally:
        if temporary is not None:
            temporary.cleanup()
        if lock is not None:
            lock.release()
    return Results(tables.metrics, tables.predictions, tables.manifest, None if temporary else run_dir)


def _cached(run_dir: Path) -> Results:
    """The tables of the finished run in ``run_dir``."""
    log.info("already done: %s", run_dir)
    metrics, predictions, manifest = store.read_run(run_dir)
    return Results(metrics, predictions, manifest, run_dir, cached=True)


def build_noises(spec, name: str | None = None):
    """``(noise, name, identity)`` from a noise name, a list of names, ``{name: options}`` or ``Noise`` objects;
    several noises become one suite named ``name`` (default: their names joined by ``+``)."""
    from robustart.noise import Noise, NoiseSuite, create_noise
    from robustart.noise.registry import identity_options

    if isinstance(spec, (str, Noise)):
        spec = [spec]
    if isinstance(spec, dict):
        items = [(n, dict(o or {})) for n, o in spec.items()]
    elif isinstance(spec, (list, tuple)) and spec:
        items = [(s, {}) if isinstance(s, str) else (s, None) for s in spec]
    else:
        raise UserError(f"noise must be a name, a list of names, a {{name: options}} dict or Noise objects: {spec!r}")
    built, identity = [], {}
    for item, options in items:
        if isinstance(item, Noise):
            built.append(item)
            state = {k: v for k, v in vars(item).items() if isinstance(v, (bool, int, float, str, list, tuple))}
            identity[item.name] = {"object": type(item).__qualname__, "state": state}
            continue
        if not isinstance(item, str):
            raise UserError(f"noise {item!r} is neither a noise name nor a Noise object")
        kwargs = noise_kwargs(item, options)
        try:
            built.append(create_noise(item, **kwargs))
        except ValueError as err:
            raise UserError(str(err)) from None
        identity[item] = identity_options(item, kwargs)
    if len(built) == 1:
        return built[0], name or built[0].name, identity
    name = name or "+".join(n.name for n in built)
    try:
        return NoiseSuite(name, built), name, identity
    except ValueError as err:
        raise UserError(str(err)) from None


def _fingerprint(dataset, probes: int = 32) -> str:
    """A digest of the data's content: its length and up to ``probes`` evenly spaced samples (all of an in-memory
    tensor set), so that another data set of the same name makes another run."""
    digest = hashlib.sha256(str(len(dataset)).encode())
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
    step = max(1, len(dataset) // probes)
    for i in range(0, len(dataset), step):
        item = dataset[i]
        if item is None:
            continue
        for part in item:
            value = part if isinstance(part, torch.Tensor) else torch.as_tensor(part)
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _dataset(data, model, model_opts: dict, opts: dict):
    """``(dataset of (image, label, sample_id), DatasetInfo)`` for any of :func:`evaluate`'s kinds of data."""
    from robustart import data as datasets
    from robustart.models import Samples, model_input_size

    name = opts["data_name"]
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, (str, Path)):
        if str(data) == "fashion_mnist":
            cache = Path(opts["cache_dir"] or os.environ.get("ROBUSTART_CACHE", store.DEFAULT_CACHE_DIR)).expanduser()
            try:
                dataset, info = datasets.load_fashion_mnist(None, cache, "test")
            except (FileNotFoundError, ValueError) as err:
                raise UserError(str(err)) from None
        else:
            dataset, info = _folder(Path(data).expanduser(), model_input_size(model, model_opts), model_opts)
        info.name = name or info.name
    elif isinstance(data, torch.utils.data.Dataset):
        dataset = Samples(data)
        image, _, _ = dataset[0]
        info = datasets.DatasetInfo(name or type(data).__name__.lower(), "test", "in memory", len(dataset),
                                    dataset.num_classes(), image.shape[0])  # fmt: skip
    else:
        raise UserError(f"data must be a Dataset, a DataLoader, a folder or 'fashion_mnist', got {type(data).__name__}")
    if opts["max_samples"] is not None and opts["max_samples"] < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(opts["max_samples"]))
        info.num_samples = len(dataset)
    return dataset, info


def _folder(root: Path, input_size, model_opts: dict):
    """A folder of class folders (sorted class names, as torchvision's ``ImageFolder``), read at the model's size."""
    from robustart import data as datasets

    if not root.is_dir():
        raise UserError(f"data={root}: no such folder (give a Dataset, a DataLoader or a folder of class folders)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.is_file()]
    if not files:
        raise UserError(f"data={root} holds no class folders with images (expected {root}/<class>/<image>)")
    if input_size is None:
        raise UserError(f"data={root} is a folder of images: give the model's input_size=(3, H, W)")
    transform = datasets.eval_transform(tuple(input_size), model_opts.get("crop_pct") or 1.0,
                                        model_opts.get("interpolation") or "bilinear")  # fmt: skip
    dataset = datasets.ImageFolderDataset([f for f, _ in files], [k for _, k in files], transform, root=root)
    info = datasets.DatasetInfo(root.name, "test", str(root), len(files), len(classes), input_size[0])
    return dataset, info
