"""The protocol columns of the results: what each row was measured under, beyond its noise and condition, so that
a comparison pools only rows measured the same way (see :data:`robustart.store.PROTOCOL_COLUMNS`).

A noise built by :func:`robustart.noise.create_noise` keeps the options it was built with (``built_with``); its
options class declares which options are protocol (:mod:`robustart.noise.options`). A noise object of one's own
without declared options leaves the columns null. Also here: each metric's ``unit`` and each row's ``ci_method``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from robustart.noise.adversarial.attack_base import parse_eps
from robustart.noise.base import Noise
from robustart.noise.natural.params import parameter_set_name
from robustart.noise.options import NOISE_PROTOCOL
from robustart.noise.registry import get_noise_entry

#: the protocol columns of the results (see :data:`robustart.store.PROTOCOL_COLUMNS`): the noise's, and the
#: training ``recipe``
PROTOCOL_COLUMNS = (*NOISE_PROTOCOL, "recipe")
#: metrics stored in percent, as ImageNet-C publishes them; every other accuracy-like value is a fraction
PERCENT = frozenset({"ce", "mce", "relative_mce", "mce_unnormalized"})
#: metric name prefixes that are counts (the validity checks' warnings)
COUNT_PREFIXES = ("warning_",)
#: metrics that are neither shares nor counts: ratios to a baseline, distances and budgets (``min_eps_*``)
SCORE, SCORE_PREFIXES = frozenset({"t5d", "nmfp", "mt5d"}), ("min_eps",)
#: metrics whose interval is a bootstrap over images (the rest with an interval: Wilson's for a proportion)
BOOTSTRAP = frozenset({"shape_bias", "mean_acc", "sys_mean", "sys_worst"})


def options_by_noise(noise) -> dict[str, Any]:
    """``{noise name: the options dataclass it was built with}`` for ``noise`` and the noises inside it (a suite's
    members, a cascade's or a transfer's attacks), first found first kept."""
    found, stack = {}, [noise]
    while stack:
        item = stack.pop(0)
        options = getattr(item, "built_with", None)
        if options is not None:
            found.setdefault(item.name, options)
        parts = getattr(item, "parts", None)  # sequence noises (ImageNet-P) hold no other noises
        stack.extend(p for p in (parts() if parts is not None else []) if isinstance(p, Noise))
    return found


def protocol_of(options, eps: float | None = None, image_side: int | None = None) -> dict[str, Any]:
    """The protocol columns of a row measured with ``options`` (a noise's options dataclass) at budget ``eps``
    on images of ``image_side`` px (which resolves ``params=auto``)."""
    cols: dict[str, Any] = dict.fromkeys(NOISE_PROTOCOL)
    attack = getattr(options, "attack", None)
    if isinstance(attack, str):  # transfer: the crafting attack's protocol, on the source model
        inner = get_noise_entry(attack).options
        names = {f.name for f in dataclasses.fields(inner)}
        cols.update(protocol_of(inner(**{k: v for k, v in options.attack_options.items() if k in names}), eps))
    cols.update(getattr(type(options), "PROTOCOL", {}))
    for f in dataclasses.fields(options):
        column = f.metadata.get("protocol", f.name if f.name in NOISE_PROTOCOL else None)
        if column is not None:
            cols[column] = getattr(options, f.name)
    if cols["param_set"] is not None and image_side is not None:
        cols["param_set"] = parameter_set_name(cols["param_set"], image_side)
    if cols["source_model"] is not None and not isinstance(cols["source_model"], str):
        cols["source_model"] = type(cols["source_model"]).__name__  # a module given from Python
    rel = getattr(options, "rel_stepsize", None)
    if cols["step_size"] == "eps":
        cols["step_size"] = eps
    elif isinstance(cols["step_size"], str):  # an absolute step written as users write budgets
        cols["step_size"] = parse_eps(cols["step_size"])
    elif rel is not None and eps is not None:
        cols["step_size"] = rel * eps
    return cols


def unit_of(metric: str) -> str:
    """The unit of ``metric``'s values: ``fraction``, ``percent``, ``count`` or ``score``."""
    if metric in PERCENT:
        return "percent"
    if metric.startswith(COUNT_PREFIXES):
        return "count"
    return "score" if metric in SCORE or metric.startswith(SCORE_PREFIXES) else "fraction"


def add_protocol(frame: pd.DataFrame, noise, *, recipe: str, image_side: int | None) -> pd.DataFrame:
    """``frame`` (metric or prediction rows with ``noise`` and ``eps``) with the protocol columns filled where the
    rows do not already hold a value (a curve's ``steps`` axis stays); metric rows also get ``unit`` and
    ``ci_method``. The protocol is computed once per (noise, eps) and joined on."""
    options = options_by_noise(noise)
    keys = frame[["noise", "eps"]].astype({"noise": object, "eps": "float64"}).reset_index(drop=True)
    table = []
    for name, eps in keys.drop_duplicates().itertuples(index=False):
        found = options.get(name)
        budget = None if pd.isna(eps) else float(eps)
        cols = protocol_of(found, budget, image_side) if found is not None else dict.fromkeys(NOISE_PROTOCOL)
        table.append({"noise": name, "eps": eps, **cols})
    columns = ["noise", "eps", *NOISE_PROTOCOL]
    table = pd.DataFrame(table, columns=columns).astype({"noise": object, "eps": "float64"})  # typed when empty
    joined = keys.merge(table, on=["noise", "eps"], how="left", validate="many_to_one")
    frame = frame.copy()
    for column in NOISE_PROTOCOL:
        values = joined[column].astype(object).to_numpy()
        if column in frame:  # a value the row already holds (a curve's steps axis) stays
            values = frame[column].astype(object).where(frame[column].notna(), pd.Series(values, index=frame.index))
        frame[column] = pd.Series(values, index=frame.index, dtype=object).where(lambda v: v.notna(), None)
    for column in ("steps", "restarts"):  # counts, whatever float a concatenation made of them
        frame[column] = pd.Series(
            [None if v is None else int(v) for v in frame[column]], index=frame.index, dtype=object
        )
    frame["recipe"] = recipe
    if "metric" in frame:
        frame["unit"] = [unit_of(m) for m in frame["metric"]]
        has_ci = frame["ci_low"].notna() if "ci_low" in frame else pd.Series(False, index=frame.index)
        method = ["bootstrap" if m in BOOTSTRAP else "wilson" for m in frame["metric"]]
        frame["ci_method"] = [m if ok else "none" for m, ok in zip(method, has_ci, strict=True)]
    return frame
