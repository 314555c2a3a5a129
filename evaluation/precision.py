"""Mixed precision and channels-last memory format for evaluation, as one wrapper around the model.

The run wraps its model once (:func:`with_precision`), so the attacks' gradient passes and the scoring
passes both run as configured. Logits always come back as ``float32``: losses, softmax confidences and
margins are computed at full precision whatever the forward pass used.

- ``amp``: ``None`` (or ``"off"`` / ``"false"``) runs in float32; ``"bf16"`` runs the forward pass under
  ``torch.autocast`` with bfloat16 (CUDA and CPU); ``"fp16"`` with float16 (CUDA only: on the CPU it is
  slow where it works at all, so it is refused). bf16 keeps float32's range, so attack gradients do not
  underflow; fp16 has no loss scaling here and suits plain scoring better than gradient attacks.
- ``channels_last``: the model's weights and every input batch use the NHWC memory layout, which recent
  GPUs' convolution kernels prefer. Values are the same up to floating-point summation order.

>>> import torch
>>> from torch import nn
>>> model = with_precision(nn.Conv2d(3, 4, 3), amp="bf16", channels_last=True)
>>> model(torch.rand(2, 3, 8, 8)).dtype
torch.float32
"""

from __future__ import annotations

import torch
from torch import nn

#: the autocast dtype of each ``evaluation.amp`` value that turns mixed precision on
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_OFF = ("off", "false", "none")


def amp_dtype(amp: str | bool | None) -> torch.dtype | None:
    """The autocast dtype of an ``evaluation.amp`` value: ``None`` for off (``None``, ``False``, ``"off"``)."""
    if amp is None or amp is False or str(amp).lower() in _OFF:
        return None
    dtype = AMP_DTYPES.get(str(amp).lower())
    if dtype is None:
        raise ValueError(f"evaluation.amp={amp!r} is not a precision; use null (float32), bf16 or fp16")
    return dtype


def check_precision(amp: str | bool | None, device: torch.device | str) -> None:
    """Raise a ValueError naming the fix if ``amp`` is unknown or cannot run on ``device``."""
    dtype, device = amp_dtype(amp), torch.device(device)
    if dtype is torch.float16 and device.type != "cuda":
        raise ValueError(
            f"evaluation.amp=fp16 needs a CUDA device (the run uses {device}); use evaluation.amp=bf16 on the CPU"
        )


class Precision(nn.Module):
    """``model`` run under autocast and/or in channels-last layout, returning float32 logits.

    Converting to channels-last changes ``model``'s parameters in place (the layout, not the values).
    The wrapped model's ``metadata`` (zoo models have one) stays reachable as ``.metadata``.
    """

    def __init__(self, model: nn.Module, amp: str | bool | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.dtype = amp_dtype(amp)
        self.channels_last = channels_last
        if hasattr(model, "metadata"):
            self.metadata = model.metadata
        if channels_last:
            model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.model(x).float()
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            logits = self.model(x)
        return logits.float()


def with_precision(model: nn.Module, amp: str | bool | None = None, channels_last: bool = False) -> nn.Module:
    """``model`` wrapped in :class:`Precision`, or ``model`` itself when both options are off (the default
    run is untouched)."""
    if amp_dtype(amp) is None and not channels_last:
        return model
    return Precision(model, amp, channels_last)
