"""Training-time augmentation: timm's image policies per sample, timm's Mixup/CutMix per batch.

``augment`` names a timm policy string:

- ``rand-m9-mstd0.5-inc1``: RandAugment (Cubuk et al., 2020);
- ``original`` (or ``v0``, ``originalr``...): AutoAugment's ImageNet policy (Cubuk et al., 2019);
- ``augmix-m3-w3``: AugMix (Hendrycks et al., 2020); with ``jsd`` each item becomes three views
  (clean, two AugMix draws) for the Jensen-Shannon consistency loss.

The policies work on PIL images, so each float image in [0, 1] is turned into 8-bit pixels, augmented and
turned back; grey-scale images go through RGB and back, since several operations assume colour. The
randomness is Python's and NumPy's global generators: with ``num_workers=0`` a resumed run that restores them
replays the same augmentations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def check_policy(augment: str | None) -> None:
    """Raise ValueError for a policy string timm cannot parse."""
    if augment:
        policy(augment)


def policy(augment: str):
    """timm's transform for the policy string ``augment`` (PIL image in, PIL image out)."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    # small images: translate by up to 10 px. magnitude_max < 10: at timm's top magnitude PosterizeIncreasing keeps
    # 0 bits, which Pillow >= 11 refuses; 9.9 keeps 1 bit (RandAugment's magnitude noise can reach the top)
    hparams = {"translate_const": 10, "img_mean": (128, 128, 128), "magnitude_max": 9.9}
    try:
        if augment.startswith("rand"):
            return rand_augment_transform(augment, hparams)
        if augment.startswith("augmix"):
            return augment_and_mix_transform(augment, hparams)
        return auto_augment_transform(augment, hparams)
    except (AssertionError, KeyError, ValueError) as e:
        raise ValueError(
            f"training.augment={augment!r} is not a timm policy ({type(e).__name__}: {e}); examples: "
            "'rand-m9-mstd0.5-inc1' (RandAugment), 'original' (AutoAugment), 'augmix-m3-w3' (AugMix)"
        ) from None


class Augmented(Dataset):
    """``dataset``'s ``(image, label, sample_id)`` items with ``augment`` applied to the image.

    With ``views=3`` (AugMix's JSD loss) the image becomes a ``(3, C, H, W)`` stack: the clean image and two
    independent augmentations of it.
    """

    def __init__(self, dataset: Dataset, augment: str, views: int = 1) -> None:
        self.dataset, self.augment, self.views = dataset, augment, views
        self.transform = policy(augment)

    def __len__(self) -> int:
        return len(self.dataset)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        pixels = image.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        grey = pixels.shape[2] == 1
        pil = Image.fromarray(np.repeat(pixels, 3, axis=2) if grey else pixels)
        out = np.asarray(self.transform(pil), dtype=np.uint8)
        out = out[..., :1] if grey else out
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float().div_(255)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        image, *rest = self.dataset[i]
        if self.views == 1:
            return (self._apply(image), *rest)
        return (torch.stack([image] + [self._apply(image) for _ in range(self.views - 1)]), *rest)


def mixer(mixup: float, cutmix: float, prob: float, switch_prob: float, label_smoothing: float, num_classes: int):
    """timm's :class:`~timm.data.Mixup` (batch mode), or None when both alphas are 0.

    It returns mixed images and soft targets, with label smoothing folded in."""
    if not (mixup > 0 or cutmix > 0):
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode="batch",
        label_smoothing=label_smoothing, num_classes=num_classes,
    )  # fmt: skip
