"""Shape bias on cue-conflict images (Geirhos et al., ICLR 2019; the model-vs-human benchmark's protocol).

A 1000-class ImageNet model makes a 16-way decision per image: softmax over its 1000 logits, the MEAN
probability over each category's ImageNet indices (``robustart/classes/cue_conflict_16.json``: 16 categories,
207 indices, from the WordNet ids of the original study), and the category with the largest mean
(:func:`decide`; a tie goes to the category first in alphabetical order). Each stimulus has a shape category
and a texture category; images whose two categories agree are evaluated but left out of every figure.

Over the counted images: ``shape_bias`` = shape hits / (shape hits + texture hits), decisions that are neither
left out; ``shape_acc`` = shape hits / images and ``texture_acc`` = texture hits / images. Each overall and per
shape category (the ``category`` column). Intervals: Wilson for the two accuracies, a 95% percentile bootstrap
over images (resampling the counted images, seed fixed) for shape bias.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustart.evaluation import metrics

#: the data set whose rows this module scores
DATA = "cue_conflict"
#: bootstrap resamples of the shape-bias interval (the seed is fixed: reruns agree)
BOOTSTRAP_RESAMPLES = 2000
#: the human figure of Geirhos et al. (2019), which the report's plot marks
HUMAN_SHAPE_BIAS = 0.96


@functools.lru_cache(maxsize=1)
def category_indices() -> dict[str, list[int]]:
    """The 16 categories (alphabetical) and the ImageNet-1k class indices each decision averages over."""
    from importlib import resources

    text = resources.files("robustart").joinpath("classes/cue_conflict_16.json").read_text()
    table = json.loads(text)
    return {name: table[name]["imagenet_indices"] for name in sorted(table)}


def categories() -> list[str]:
    """The 16 category names in decision order (alphabetical): decision ``i`` is ``categories()[i]``."""
    return list(category_indices())


def category_probabilities(probabilities: torch.Tensor, groups=None) -> torch.Tensor:
    """``(N, 16)``: per image and category, the mean of the 1000-class ``probabilities`` at that category's
    indices (``groups``: a list of index lists; default the 16 cue-conflict categories)."""
    groups = list(category_indices().values()) if groups is None else groups
    probabilities = torch.as_tensor(probabilities)
    return torch.stack([probabilities[:, torch.as_tensor(g)].mean(dim=1) for g in groups], dim=1)


def decide(probabilities: torch.Tensor, groups=None) -> torch.Tensor:
    """The 16-way decision per image (an index into :func:`categories`): the category whose mean probability is
    largest; ties go to the first such category."""
    return category_probabilities(probabilities, groups).argmax(dim=1)


class CategoryOutputs(nn.Module):
    """A 1000-class model seen as a 16-class one: its outputs are the logs of the category mean probabilities,
    so the evaluation's argmax is :func:`decide`'s decision and its softmax the categories' normalised means."""

    def __init__(self, model: nn.Module, groups=None) -> None:
        super().__init__()
        self.model = model
        self.groups = list(category_indices().values()) if groups is None else groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = self.model(x).float().softmax(dim=1)
        return category_probabilities(probabilities, self.groups).clamp_min(1e-38).log()


def shape_hits(shape, texture, decision) -> tuple[np.ndarray, np.ndarray]:
    """``(shape hit, texture hit)``: one boolean each per image whose shape and texture categories differ (the
    images that count), in order."""
    shape, texture, decision = (np.asarray(a, dtype=object) for a in (shape, texture, decision))
    counted = shape != texture
    return decision[counted] == shape[counted], decision[counted] == texture[counted]


def shape_counts(shape, texture, decision) -> tuple[int, int, int]:
    """``(shape hits, texture hits, images)`` over the images whose shape and texture categories differ."""
    shape_hit, texture_hit = shape_hits(shape, texture, decision)
    return int(shape_hit.sum()), int(texture_hit.sum()), len(shape_hit)


def shape_bias_interval(shape_hit, texture_hit, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0):
    """95% percentile-bootstrap interval of shape bias, resampling images (``shape_hit``, ``texture_hit``:
    one boolean per counted image). ``(nan, nan)`` when no image is a hit of either kind."""
    shape_hit, texture_hit = np.asarray(shape_hit, bool), np.asarray(texture_hit, bool)
    n = len(shape_hit)
    if n == 0 or not (shape_hit | texture_hit).any():
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    shapes, textures = shape_hit[picks].sum(axis=1), texture_hit[picks].sum(axis=1)
    hits = shapes + textures
    ratios = shapes[hits > 0] / hits[hits > 0]
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def _rows(group: pd.DataFrame, key: tuple, category: str | None) -> list[dict]:
    noise, condition, severity, eps = key
    shape_hit, texture_hit = shape_hits(group["shape_category"], group["texture_category"], group["decision"])
    n, shapes, textures = len(shape_hit), int(shape_hit.sum()), int(texture_hit.sum())
    base = dict(noise=noise, condition=condition, severity=severity, eps=eps, category=category)
    rows = []
    low, high = shape_bias_interval(shape_hit, texture_hit)
    bias = shapes / (shapes + textures) if shapes + textures else math.nan
    rows.append({**base, "metric": "shape_bias", "value": bias, "n": shapes + textures, "ci_low": low,
                 "ci_high": high})  # fmt: skip
    for metric, hits in (("shape_acc", shapes), ("texture_acc", textures)):
        low, high = metrics.wilson_interval(hits, n)
        rows.append({**base, "metric": metric, "value": hits / n if n else math.nan, "n": n, "ci_low": low,
                     "ci_high": high})  # fmt: skip
    return rows


def shape_bias_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """The shape-bias rows of cue-conflict predictions (with ``shape_category``, ``texture_category`` and
    ``decision``): per noise condition, overall (``category`` null) and per shape category. ``n`` is the number
    of counted images for the accuracies and the number of shape or texture hits for shape bias."""
    keys = ["noise", "condition", "severity", "eps"]
    rows = []
    for key, group in predictions.groupby(keys, dropna=False, sort=False):
        key = tuple(None if pd.isna(v) else v for v in key)
        rows += _rows(group, key, None)
        for category, part in group.groupby("shape_category", sort=True):
            rows += _rows(part, key, category)
    columns = [*keys, "category", "metric", "value", "n", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)
