"""Transfer (black-box) attacks: adversarial examples crafted on a source model, scored on the target model.

RobustART's transfer sweep crafts FGSM examples at {0.5, 2, 8}/255 on every source model and evaluates every
other model on them. Here any registered attack crafts them (``fgsm`` by default, with the attack's own
options and default budgets), the run's model is the target, and the usual ``robust_acc`` / ``ar`` rows
describe the target on the transferred examples. The noise records whether the source classifies each clean
image correctly (``source_correct``), from which the evaluation adds RobustART's ``transfer_asr`` per budget:
among the images both models classify correctly when clean, the share the target gets wrong on the source's
example (see :mod:`robustart.evaluation.noise_rows`).

The noise names its source by a string (a zoo model or a finished run, resolved by the run, which calls
:meth:`TransferNoise.bind_source`), or takes the source ``nn.Module`` itself when used as a library:

>>> import torch
>>> from noise import create_noise
>>> source = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
>>> noise = create_noise("transfer", source=source, eps=["8/255"])
>>> [str(c) for c in noise.conditions()]
['transfer/fgsm eps=0.0313725']
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from robustart.noise.base import Condition, Noise
from robustart.noise.options import TRANSFER, TransferOptions
from robustart.noise.registry import create_noise, get_noise_entry, register_noise


class TransferNoise(Noise):
    """An attack run on a source model; the images it returns are scored on the model the evaluator passes.

    Args:
        attack: the attack noise (a registered adversarial noise, built with its budgets and options).
        source: the source model, or its name for the run to resolve and bind (:meth:`bind_source`).

    While it runs, the noise records per sample whether the source classifies the clean image correctly
    (one source forward pass per batch), which the evaluation needs for ``transfer_asr``.
    """

    needs_model = True
    recorded = ("source_correct",)

    def __init__(self, attack: Noise, source: nn.Module | str | None = None) -> None:
        self.name = TRANSFER
        self.attack = attack
        self.norm = getattr(attack, "norm", None)  # the budgets' norm, for the run's validity checks
        self.source_name = source if isinstance(source, str) else None
        self.source: nn.Module | None = None
        self.source_info: dict = {}
        #: per sample id: the source's clean prediction is correct
        self.source_correct: dict[int, bool] = {}
        if isinstance(source, nn.Module):
            self.bind_source(source)

    def bind_source(self, model: nn.Module, info: Mapping | None = None) -> None:
        """Use ``model`` (inputs in [0, 1], the target's classes) as the source; ``info`` describes it in the
        run's manifest (name, weights, sha256, run id)."""
        self.source = model.eval()
        self.source_info = dict(info or {})

    def parts(self) -> list[Noise]:
        return [self.attack]

    def conditions(self) -> list[Condition]:
        return [Condition(TRANSFER, c.name, severity=c.severity, eps=c.eps) for c in self.attack.conditions()]

    def apply(self, images, labels, sample_ids, condition, model=None):
        if self.source is None:
            raise ValueError("noise 'transfer' has no source model; set noise.source (a zoo model or a finished run)")
        source = self._source_on(images.device)
        self._record_source_correct(source, images, labels, sample_ids)
        own = Condition(self.attack.name, condition.name, severity=condition.severity, eps=condition.eps)
        return self.attack.apply(images, labels, sample_ids, own, source)

    def _source_on(self, device: torch.device) -> nn.Module:
        """The source model, moved to ``device`` on first use (the target goes there the same way)."""
        param = next(self.source.parameters(), None)
        if param is not None and param.device != device:
            self.source = self.source.to(device)
        return self.source

    def _record_source_correct(self, source: nn.Module, images, labels, sample_ids) -> None:
        """Score the clean batch on the source once (the first condition of each batch)."""
        ids = [int(i) for i in sample_ids]
        if all(i in self.source_correct for i in ids):
            return
        with torch.inference_mode():
            correct = (source(images).argmax(1) == labels).tolist()
        self.source_correct.update(zip(ids, correct, strict=True))

    def report(self) -> dict:
        """The source (what the run bound), its clean accuracy on the evaluated samples, and the attack's own
        report (its forward and backward passes on the source)."""
        scored = list(self.source_correct.values())
        return {
            "source": self.source_info,
            "source_top1": sum(scored) / len(scored) if scored else None,
            "attack": self.attack.name,
            **({"attack_report": r} if (r := self.attack.report()) else {}),
        }


@register_noise(options=TransferOptions)
def transfer(opts: TransferOptions) -> TransferNoise:
    """Transfer attack: adversarial examples crafted on a source model by ``attack`` (FGSM by default, at
    RobustART's {0.5, 2, 8}/255), evaluated on the run's model; adds ``transfer_asr`` rows."""
    attack, source = opts.attack, opts.source
    if get_noise_entry(attack).kind != "adversarial" or attack == TRANSFER:
        raise ValueError(f"noise 'transfer': {attack!r} cannot craft the examples; use an attack (fgsm, pgd_linf, ...)")
    options = dict(opts.attack_options or {})
    for key in ("eps", "seed"):
        if key in options:
            raise ValueError(f"noise 'transfer': set noise.{key}, not noise.attack_options.{key}")
    if opts.eps is not None:
        options["eps"] = list(opts.eps)
    built = create_noise(attack, seed=opts.seed, **options)
    if (opts.source_weights is not None or opts.source_sha256 is not None) and not isinstance(source, str):
        raise ValueError("noise 'transfer': source_weights and source_sha256 go with a zoo model name as source")
    noise = TransferNoise(built, source)
    noise.source_weights, noise.source_sha256 = opts.source_weights, opts.source_sha256
    return noise
