"""Clean data by config: the evaluation set (or a dataset per condition, for sets that carry their noise) and the
training set."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from robustart.errors import UserError
from robustart.identity import noise_options

log = logging.getLogger("robustart")

SHIFT_SETS = ("imagenet_a", "imagenet_o", "imagenet_r", "imagenet_sketch", "imagenetv2")


#: one's own class folders, CIFAR and the released CIFAR-C, read at the model's own preprocessing (all but CIFAR-C
#: also train: data.train_root, data.train_split)
OWN_DATA = ("folder", "cifar10", "cifar100", "cifar10_c", "cifar100_c")

DATA_NAMES = ("fashion_mnist", "fashion_mnist_ood", "imagenet", "imagenet_c", "imagenet_p", *SHIFT_SETS, "cue_conflict",
              *OWN_DATA)  # fmt: skip


def load_data(cfg: DictConfig, cache_dir: Path, noise, need_train: bool):
    """``(eval_data, info, train_data)``: the evaluation set (one dataset, or ``{Condition: dataset}`` for
    sets that carry their noise: the released ImageNet-C and CIFAR-C files, ImageNet-O with its in-distribution
    images, image folders re-decoded by system noise), its description, and the training set when
    ``need_train`` (training, or a subnet whose batch-norm statistics are re-estimated)."""
    from robustart import data as datasets
    from robustart.evaluation.shift import OOD
    from robustart.models import model_metadata
    from robustart.noise import Condition

    ev, train_data = cfg.evaluation, None
    if cfg.data.name in ("fashion_mnist", "fashion_mnist_ood"):
        eval_data, info = datasets.load_fashion_mnist(cfg.data.root, cache_dir, cfg.data.split)
        if need_train:
            train_data, _ = datasets.load_fashion_mnist(cfg.data.root, cache_dir, cfg.data.train_split)
        if cfg.data.name == "fashion_mnist_ood":  # the small-scale out-of-distribution pair
            if cfg.noise.name != "clean":
                raise UserError("data=fashion_mnist_ood measures out-of-distribution detection: use noise=clean")
            patches = datasets.photo_patches(len(eval_data), seed=cfg.seed)
            eval_data = {Condition("clean", "clean"): eval_data, Condition(OOD, "photo_patches"): patches}
            info.name = "fashion_mnist_ood"
            info.notes.append(
                f"out-of-distribution set: {len(patches)} grey 28 px patches of scikit-image's photographs"
            )
    elif cfg.data.name in ("imagenet", "imagenet_c", "imagenet_p", "cue_conflict", *SHIFT_SETS):
        if need_train:
            raise UserError(
                f"training (or re-estimating a subnet's batch norm) on data={cfg.data.name} is not supported yet; "
                "drop training= or use fashion_mnist"
            )
        # the model's own preprocessing, from its metadata
        meta = model_metadata(cfg.model)  # a zoo entry's, a timm model's or a custom model's
        if cfg.data.name == "imagenet":
            transform = datasets.eval_transform(meta.input_size, meta.crop_pct, meta.interpolation)
            if cfg.noise.name == "imagenet_p":
                # ImageNet-P's protocol: the geometric perturbations act on the resized image (256 px for
                # 224 px models), and every frame is then centre-cropped (the noise does it)
                resized = math.floor(meta.input_size[-1] / meta.crop_pct)
                transform = datasets.eval_transform((*meta.input_size[:2], resized), 1.0, meta.interpolation)
            eval_data, info = datasets.load_imagenet_folder(cfg.data.root, cfg.data.split, transform)
        elif cfg.data.name == "cue_conflict":  # whole images at the model's input size, never cropped
            from robustart.cue_conflict import load_cue_conflict, transform_for

            transform = transform_for(meta.input_size, meta.interpolation)
            eval_data, info = load_cue_conflict(cfg.data.root, cache_dir, transform)
        elif cfg.data.name in SHIFT_SETS:
            if cfg.data.name == "imagenet_o" and cfg.noise.name != "clean":
                raise UserError(
                    "data=imagenet_o measures out-of-distribution detection on clean images: use noise=clean"
                )
            transform = datasets.eval_transform(meta.input_size, meta.crop_pct, meta.interpolation)
            eval_data, info = datasets.load_shift_folder(cfg.data.name, cfg.data.root, transform, cfg.data.in_root)
            if isinstance(eval_data, dict):
                eval_data = {Condition("clean", "clean"): eval_data["in_distribution"],
                             Condition(OOD, "imagenet_o"): eval_data["imagenet_o"]}  # fmt: skip
        elif cfg.data.name == "imagenet_p":
            if cfg.noise.name != "imagenet_p":
                raise UserError("data=imagenet_p holds perturbation videos: use it with noise=imagenet_p "
                                "(noise.perturbations and noise.difficulties choose the folders to read)")  # fmt: skip
            from robustart.noise.natural.perturbations import P_TEST

            options = noise_options(cfg.noise)["imagenet_p"]
            released, info = datasets.load_imagenet_p_folder(
                cfg.data.root, options["perturbations"] or list(P_TEST), options["difficulties"], meta.input_size[-1]
            )
            eval_data = {Condition(cfg.noise.name, p, severity=d): v for (p, d), v in released.items()}
        else:
            if cfg.noise.name != "imagenet_c":
                raise UserError("data=imagenet_c holds the corrupted images already: use it with noise=imagenet_c "
                                "(noise.corruptions and noise.severities choose the folders to read)")  # fmt: skip
            options = noise_options(cfg.noise)["imagenet_c"]
            transform = datasets.released_transform(meta.input_size)
            released, info = datasets.load_imagenet_c_folder(
                cfg.data.root, options["corruptions"], options["severities"], transform
            )
            eval_data = {Condition(cfg.noise.name, c, severity=s): d for (c, s), d in released.items()}
        eval_data = _system_noise_datasets(cfg, noise, eval_data, info, meta)
    elif cfg.data.name in OWN_DATA:
        meta = model_metadata(cfg.model)
        eval_data, info, train_data = _own_data(cfg, cache_dir, need_train, meta)
        eval_data = _system_noise_datasets(cfg, noise, eval_data, info, meta)
    else:
        raise UserError(f"unknown data {cfg.data.name!r}; valid names: {', '.join(DATA_NAMES)}")
    if ev.max_samples is not None:
        if isinstance(eval_data, dict):  # conditions a dataset each: the same class-balanced N images of each
            eval_data = {k: d.subset(ev.max_samples) for k, d in eval_data.items()}
            info.num_samples = max(len(d) for d in eval_data.values())
        elif ev.max_samples < len(eval_data):
            eval_data = eval_data.subset(ev.max_samples)
            info.num_samples = len(eval_data)
    return eval_data, info, train_data


def _own_data(cfg: DictConfig, cache_dir: Path, need_train: bool, meta):
    """``data=folder``, ``cifar10``/``cifar100`` and the released ``cifar10_c``/``cifar100_c``, read at the model's own
    preprocessing: ``(eval_data, info, train_data)``."""
    from robustart import cifar
    from robustart.class_folders import load_folder
    from robustart.data import eval_transform
    from robustart.noise import Condition

    data, train_data = cfg.data, None
    transform = eval_transform(meta.input_size, meta.crop_pct, meta.interpolation)
    if data.name == "folder":
        eval_data, info = load_folder(data.root, transform, split=data.split)
        if need_train:
            if data.train_root is None:
                raise UserError("training on data=folder (or re-estimating a subnet's batch norm) reads "
                                "data.train_root=DIR: class folders of the same classes as data.root")  # fmt: skip
            train_data, _ = load_folder(data.train_root, transform, split=data.train_split, option="data.train_root",
                                        classes=info.classes, strict=True)  # fmt: skip
    elif data.name in cifar.CORRUPTED:
        clean = cifar.CORRUPTED[data.name]
        if need_train:
            raise UserError(f"data={data.name} holds corrupted test images only: train on data={clean} and evaluate "
                            "the checkpoint here with model.weights=robustart:HASH")  # fmt: skip
        if cfg.noise.name != "imagenet_c":
            raise UserError(f"data={data.name} holds the corrupted images already: use it with noise=imagenet_c "
                            "(noise.corruptions and noise.severities choose the files and severities)")  # fmt: skip
        options = noise_options(cfg.noise)["imagenet_c"]
        released, info = cifar.load_cifar_c(data.name, data.root, options["corruptions"], options["severities"],
                                            transform)  # fmt: skip
        eval_data = {Condition(cfg.noise.name, c, severity=s): d for (c, s), d in released.items()}
    else:
        eval_data, info = cifar.load_cifar(data.name, data.root, cache_dir, data.split, transform)
        if need_train:
            root = data.train_root if data.train_root is not None else data.root
            train_data, _ = cifar.load_cifar(data.name, root, cache_dir, data.train_split, transform, strict=True)
    return eval_data, info, train_data


def _system_noise_datasets(cfg: DictConfig, noise, eval_data, info, meta):
    """Image folders under system noise: ``{clean: the model's own preprocessing, decoder/resizer: the same
    files re-decoded and resized by that pair}`` (decoded in the loader's workers); other data unchanged."""
    from robustart import data as datasets
    from robustart.noise import Condition
    from robustart.noise.system import SystemNoise, reference_resizer

    if "members" in cfg.noise and "imagenet_s" in noise_options(cfg.noise):
        raise UserError(
            f"noise=imagenet_s re-decodes the image files of data={cfg.data.name} and cannot be a member of a suite "
            "there; run it alone (in suites it works on in-memory data such as fashion_mnist)"
        )
    if not isinstance(noise, SystemNoise):
        return eval_data
    if not isinstance(eval_data, datasets.ImageFolderDataset):
        raise UserError(
            f"noise=imagenet_s re-decodes image files, which data={cfg.data.name} does not provide as one folder "
            "set; use data=imagenet (or imagenet_a, imagenet_r, imagenet_sketch, imagenetv2, folder, or cifar10/"
            "cifar100 from class folders)"
        )
    size, crop_pct = meta.input_size[-1], meta.crop_pct
    grid = {c: eval_data.raw(noise.pipeline(c, size, crop_pct)) for c in noise.conditions()}
    info.notes.append(
        f"imagenet_s: {len(grid)} decoder x resizer combinations of the raw files; the reference (clean) is the "
        f"model's own preprocessing, pil/{reference_resizer(meta.interpolation)} at crop_pct {crop_pct}"
    )
    return {Condition("clean", "clean"): eval_data, **grid}
