"""The source model of a transfer attack (``noise=transfer``): a zoo model, or the model of a finished run.

:func:`bind_sources` runs in the run's ``prepare``: it builds each transfer noise's source, checks that it
fits the target (classes, channels, input size) and binds it, so a bad source stops the run with a
:class:`~robustart.errors.UserError` before any work.

- A zoo name (``noise.source=resnet50``) takes ``noise.source_weights`` (``pretrained`` when unset,
  ``random`` seeded by the run's seed, or a file, pinned by ``noise.source_sha256``).
- A finished run (``noise.source=<its folder>`` or ``<its run id>`` in the results folder) is rebuilt from
  its ``manifest.json``: the checkpoint it trained or reused, or the weights it named, pinned to the
  sha256 it recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig

from robustart import store
from robustart.errors import UserError


def transfer_noises(noise) -> list:
    """The noises of a run's noise (itself, or a suite's members) that take a source model."""
    parts = list(noise.members.values()) if hasattr(noise, "members") else [noise]
    return [p for p in parts if hasattr(p, "bind_source")]


def bind_sources(cfg: DictConfig, noise, target, class_mask: list[int] | None = None) -> None:
    """Build, check and bind the source model of every transfer noise in ``noise`` (see the module docstring).

    The source gets what the target gets: the data set's output mask, and the run's precision settings.
    """
    from robustart.evaluation.precision import with_precision
    from robustart.evaluation.shift import MaskedOutputs

    for part in transfer_noises(noise):
        if part.source is not None:  # given as a module (library use)
            continue
        if not part.source_name:
            raise UserError("noise=transfer needs a source model: set noise.source to a zoo model name (resnet50) "
                            "or a finished run (its folder, or its run id)")  # fmt: skip
        model, info = load_source(cfg, part.source_name, part.source_weights, part.source_sha256)
        check_compatible(model, target, part.source_name)
        if class_mask is not None:
            model = MaskedOutputs(model, class_mask)
        part.bind_source(with_precision(model, cfg.evaluation.amp, cfg.evaluation.channels_last), info)


def load_source(cfg: DictConfig, name: str, weights: str | None = None, sha256: str | None = None):
    """``(model, info)``: the source ``name`` (a zoo model, or a run folder or run id) and its description for
    the manifest (``model, weights, sha256`` and, for a run, ``run_id``)."""
    from robustart import model_zoo

    if name in model_zoo.list_models():
        return _zoo_source(name, weights, sha256, cfg.seed)
    if weights is not None or sha256 is not None:
        raise UserError(f"noise.source={name} is not a zoo model, so noise.source_weights and noise.source_sha256 do "
                        "not apply (a run source uses that run's weights)")  # fmt: skip
    results = Path(os.path.expanduser(cfg.paths.results_dir))
    if not Path(name).expanduser().is_dir() and not (results.is_dir() and any(results.glob(f"*-{name}"))):
        zoo = ", ".join(model_zoo.list_models())
        raise UserError(
            f"unknown noise.source={name!r}: neither a zoo model (valid: {zoo}) nor a run folder or run id in {results}"
        )
    return _run_source(store.find_run(cfg.paths.results_dir, name, "noise.source"), name)


def _describe(model, **extra) -> dict:
    meta = model.metadata
    return {"model": meta.name, "weights": meta.weights, "sha256": meta.sha256, **extra}


def _zoo_source(name: str, weights: str | None, sha256: str | None, seed: int):
    import torch

    from robustart import model_zoo

    weights = weights or "pretrained"
    try:
        if weights == "random":  # reproducible: drawn from the run's seed, leaving the global generator alone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = model_zoo.create_model(name)
        else:
            model = model_zoo.create_model(name, weights=weights, sha256=sha256)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(f"noise.source={name} with noise.source_weights={weights}: {err}") from None
    return model, _describe(model)


def _run_source(folder: Path, name: str):
    """The model of the finished run in ``folder``, with the weights its manifest records."""
    from robustart import model_zoo

    manifest = json.loads((folder / store.MANIFEST_FILE).read_text())
    config, meta, card = manifest["config"]["model"], manifest["model"], manifest.get("checkpoint")
    if card:
        weights, sha256 = card["path"], card["sha256"]
        if not Path(weights).is_file():
            raise UserError(f"noise.source={name}: the checkpoint of run {folder.name} is gone ({weights}); "
                            "run it again, or name its weights file with a zoo source")  # fmt: skip
    elif config["weights"] == "random":
        raise UserError(
            f"noise.source={name}: run {folder.name} evaluated untrained random weights, which cannot be rebuilt; "
            "use a run of trained weights, or a zoo model with noise.source_weights"
        )
    else:
        weights, sha256 = config["weights"], config.get("sha256") or meta.get("sha256")
    overrides = {"num_classes": meta["num_classes"], "in_chans": meta["in_chans"], "img_size": config.get("img_size")}
    try:
        model = model_zoo.create_model(config["name"], weights=weights, sha256=sha256, **overrides)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(f"noise.source={name}: the weights of run {folder.name}: {err}") from None
    if meta.get("sha256") and model.metadata.sha256 and model.metadata.sha256 != meta["sha256"]:
        raise UserError(f"noise.source={name}: the weights {weights} differ from those run {folder.name} used "
                        f"(sha256 {model.metadata.sha256[:12]}... instead of {meta['sha256'][:12]}...)")  # fmt: skip
    return model, _describe(model, weights=meta["weights"], run_id=manifest["run_id"], run=folder.name)


def check_compatible(source, target, name: str) -> None:
    """A UserError unless ``source`` takes the target's inputs and predicts the target's classes."""
    s, t = source.metadata, target.metadata
    if s.num_classes != t.num_classes:
        raise UserError(f"noise.source={name} has {s.num_classes} classes but model {t.name} has {t.num_classes}; "
                        "a transfer source must predict the target's classes")  # fmt: skip
    if s.in_chans != t.in_chans:
        raise UserError(f"noise.source={name} takes {s.in_chans} channels but model {t.name} takes {t.in_chans}")
    if tuple(s.input_size) != tuple(t.input_size):
        raise UserError(f"noise.source={name} takes {tuple(s.input_size)} inputs but model {t.name} takes "
                        f"{tuple(t.input_size)}; the examples are crafted on the target's inputs")  # fmt: skip
