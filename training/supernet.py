"""Training a weight-sharing supernet (:class:`robustart.model_zoo.nas.SuperNet`) with the sandwich rule.

Each step (BigNAS, Yu et al. 2020; Once-for-All, Cai et al. 2020) trains, on the same batch,

- the **largest** subnet on the labels (the recipe's criterion);
- the **smallest** subnet and ``num_random`` **random** subnets on the largest one's predictions
  (in-place distillation: cross-entropy to its softmax, detached) or, without distillation, on the labels.

Training the two extremes every step keeps both ends of the space good, which lifts every subnet between
them. The losses are averaged (not summed), so a recipe's learning rate means what it means for one network.
The random subnets come from a generator seeded by ``seed``: training is as deterministic as :func:`fit`.

>>> import model_zoo
>>> from training.supernet import fit_supernet
>>> model = model_zoo.create_model("nas_supernet")                    # doctest: +SKIP
>>> fit_supernet(model, train_set, epochs=1, lr=0.1, num_random=2)    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from robustart.model_zoo.nas import Genes, SuperNet, random_genes
from robustart.training.fit import fit


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` to the soft targets ``target_probs`` (rows sum to 1). It differs
    from the KL divergence to the targets only by their entropy, a constant: same gradients."""
    return -(target_probs * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def _supernet_of(model: nn.Module) -> SuperNet:
    """The SuperNet inside ``model`` (a ``model_zoo.NormalizedModel`` around it, or the SuperNet itself)."""
    net = getattr(model, "net", model)
    if not isinstance(net, SuperNet):
        raise TypeError(
            f"sandwich training needs a model_zoo.nas.SuperNet (model nas_supernet), got {type(net).__name__}"
        )
    return net


def sandwich_loss(num_random: int = 2, distill: bool = True, seed: int = 0) -> Callable:
    """A ``loss_fn`` for :func:`training.fit` that trains a supernet with the sandwich rule (module docstring).

    Args:
        num_random: random subnets per step, besides the largest and the smallest.
        distill: train the smaller subnets on the largest one's predictions (else on the labels).
        seed: seeds the generator of the random subnets (it advances every step).

    Returns:
        ``loss_fn(model, images, labels, criterion) -> (loss, logits)`` where ``model`` takes images in the
        form the batch has (a ``NormalizedModel`` whose ``.net`` is a :class:`SuperNet`), ``loss`` is the mean of
        the subnets' losses and ``logits`` are the largest subnet's. The largest subnet is active afterwards.
    """
    if isinstance(num_random, bool) or not isinstance(num_random, int) or num_random < 0:
        raise ValueError(f"num_random must be an integer >= 0, got {num_random!r}")
    generator = torch.Generator().manual_seed(seed)
    largest, smallest = Genes.largest(), Genes.smallest()

    def loss_fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, criterion: Callable):
        supernet = _supernet_of(model)
        try:
            supernet.set_active(largest)
            logits = model(images)
            losses = [criterion(logits, labels)]
            teacher = logits.detach().float().softmax(dim=1)
            for genes in [smallest, *(random_genes(generator) for _ in range(num_random))]:
                supernet.set_active(genes)
                student = model(images)
                losses.append(soft_cross_entropy(student, teacher) if distill else criterion(student, labels))
        finally:
            supernet.set_active(largest)
        return torch.stack(losses).mean(), logits

    return loss_fn


def fit_supernet(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_random: int = 2,
    distill: bool = True,
    channels_last: bool = True,
    **fit_kwargs,
) -> dict[str, float]:
    """Train a supernet in place with the sandwich rule: :func:`robustart.training.fit` with :func:`sandwich_loss`.

    Args:
        model: a ``model_zoo.NormalizedModel`` around a :class:`SuperNet` (``create_model("nas_supernet")``).
        dataset: training data of ``(image, label, sample_id)`` items.
        num_random, distill: see :func:`sandwich_loss` (its ``seed`` is ``fit``'s ``seed``).
        channels_last: train in channels-last memory format (about twice as fast on a CPU, where
            depthwise convolutions dominate); the weights are handed back in the standard format.
        fit_kwargs: :func:`training.fit`'s options (``epochs``, ``batch_size``, ``lr``, ``seed``, ``device``...).

    Returns:
        :func:`robustart.training.fit`'s metrics (loss and accuracy are the largest subnet's).
    """
    if "loss_fn" in fit_kwargs:
        raise ValueError("fit_supernet sets loss_fn itself (the sandwich rule); call training.fit for another one")
    _supernet_of(model)
    loss_fn = sandwich_loss(num_random=num_random, distill=distill, seed=fit_kwargs.get("seed", 0))
    return fit(model, dataset, loss_fn=loss_fn, channels_last=channels_last, **fit_kwargs)
