"""The options of ``model=timm`` and ``model=custom``: which kind of model takes which, checked before any work.

Imports no PyTorch, so that a run's config is checked (:func:`robustart.plan.validate_config`) and a finished run
skipped without it; :mod:`robustart.models` builds the models. Only :func:`check_model_family` needs the model zoo
(whose package imports PyTorch), so :func:`robustart.plan.prepare` calls it, after the done-check: a run with a
family the zoo does not know never finishes, so it is never skipped either.
"""

from __future__ import annotations

from robustart.errors import UserError
from robustart.identity import OWN_MODEL_OPTIONS, model_kind, plain_model_options

#: the options each kind of model takes besides name, weights, sha256 and bn_batches (which it ignores)
KIND_OPTIONS = {
    "zoo": ("num_classes", "in_chans", "img_size", "subnet"),
    "timm": ("tag", "kwargs", "family", "num_classes", "in_chans", "img_size"),
    "custom": ("target", "kwargs", "family", "input_size", "mean", "std", "crop_pct", "interpolation"),
}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def check_model_options(model_cfg) -> None:
    """Refuse options the kind of model does not take, and malformed values, before any work (no import, no
    data): a zoo entry takes none of :data:`~robustart.identity.OWN_MODEL_OPTIONS`, ``timm`` needs ``tag``,
    ``custom`` needs ``target``. ``model.family`` is checked by :func:`check_model_family`."""
    options = plain_model_options(model_cfg)
    kind = model_kind(options)
    wrong = [k for k in (*OWN_MODEL_OPTIONS, "num_classes", "in_chans", "img_size", "subnet")
             if k not in KIND_OPTIONS[kind] and options.get(k) not in (None, {})]  # fmt: skip
    if wrong:
        if kind == "zoo":
            raise UserError(
                f"model.{wrong[0]} is an option of model=timm and model=custom; the zoo entry {options['name']} "
                "has its own family and preprocessing (model=timm model.tag=NAME evaluates any timm model)"
            )
        hint = {"custom": f"pass it to the factory (+model.kwargs.{wrong[0]}=VALUE), or set model.input_size",
                "timm": "timm models take their preprocessing from timm's pretrained config"}[kind]  # fmt: skip
        raise UserError(f"model={kind} does not take model.{wrong[0]}: {hint}")
    if kind == "zoo":
        return
    if kind == "timm":
        if not options.get("tag"):
            raise UserError("model=timm needs model.tag=<timm model name>, e.g. model.tag=convnext_nano.in12k_ft_in1k")
        clash = sorted(set(options.get("kwargs") or {}) & {"num_classes", "in_chans", "img_size", "pretrained"})
        if clash:
            raise UserError(f"model.kwargs.{clash[0]}: set model.{clash[0]} instead (model.weights for pretrained)")
        return
    target = options.get("target")
    if not target or target.count(":") != 1 or not all(target.split(":")):
        raise UserError(f"model=custom needs model.target=MODULE:FACTORY (e.g. mymodule:build), got {target!r}")
    if options.get("weights") == "pretrained":
        raise UserError("model=custom takes model.weights=random (the module as its factory returns it) or a file")
    size = options.get("input_size")
    if size is not None and (len(size) != 3 or min(size) < 1):
        raise UserError(f"model.input_size must be [channels, height, width], got {list(size)}")
    for key in ("mean", "std"):
        values = options.get(key)
        lengths = (1, size[0]) if size else (1, len(values or ()))
        if values is not None and (len(values) not in lengths or (key == "std" and min(values) <= 0)):
            raise UserError(f"model.{key} takes one value or one per input channel{' (> 0)' * (key == 'std')}")
    if options.get("crop_pct") is not None and not 0 < options["crop_pct"] <= 1:
        raise UserError(f"model.crop_pct must be in (0, 1], got {options['crop_pct']}")
    if options.get("interpolation") not in (None, *INTERPOLATIONS):
        raise UserError(f"model.interpolation must be one of {', '.join(INTERPOLATIONS)}")


def check_model_family(model_cfg) -> None:
    """``model.family`` of ``model=timm`` and ``model=custom``, when set, is one of the zoo's families."""
    from robustart.model_zoo.metadata import FAMILIES

    family = plain_model_options(model_cfg).get("family")
    if family not in (None, *FAMILIES):
        raise UserError(f"model.family must be one of {', '.join(FAMILIES)}, got {family!r}")
