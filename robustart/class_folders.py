"""Class folders of one's own images (``data=folder``): ``<root>/<class>/<image>``, any image format Pillow reads,
the classes in sorted order of their folder names (torchvision's ``ImageFolder`` convention: label ``k`` is the
``k``-th name), ``num_classes`` the number of class folders. CIFAR's class folders are read by the same function,
labelled by CIFAR's own class list instead (:mod:`robustart.cifar`).

Folders and files whose names start with a dot are left out; files in nested folders of a class folder belong to
that class (as in ``ImageFolder``). Files are decoded lazily; an unreadable one is skipped and counted when
evaluating (:class:`~robustart.folders.ImageFolderDataset`) and stops a training run with its name.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from robustart.folders import ImageFolderDataset
from robustart.samples import DatasetInfo

#: what ``data.root`` of ``data=folder`` holds
FOLDER_LAYOUT = "<class>/<image> (one folder per class, any image format Pillow reads)"


@functools.lru_cache(maxsize=1)
def pillow_suffixes() -> frozenset[str]:
    """The file suffixes of every image format Pillow decodes (its stub formats, which need an outside plugin, and
    video formats left out)."""
    from PIL import Image, ImageFile

    Image.init()
    readable = {
        fmt
        for fmt, (factory, _) in Image.OPEN.items()
        if fmt != "MPEG" and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in readable)


def _images_under(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    """The image files anywhere under ``folder`` (following links, skipping hidden names), sorted by path; listed
    with ``os.walk``, which knows files from folders without a ``stat`` per file."""
    found = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here, n) for n in names if not n.startswith(".") and os.path.splitext(n)[1].lower() in suffixes]
    return sorted(found)


def class_folder_files(
    folder: Path, where: str, classes: list[str] | None = None, known_as: str = ""
) -> tuple[list[Path], list[int], list[str]]:
    """``(files, labels, classes)`` of the images under ``folder/<class>/``: class folders in label order, files
    sorted within each.

    Args:
        folder: the folder of class folders.
        where: how messages name it (``data.root=DIR``).
        classes: ``None``: the sorted folder names are the classes. Otherwise the class names in label order; every
            folder must be one of them (a class may lack its folder).
        known_as: what ``classes`` are, for the message about a folder outside them (``CIFAR-10 classes``).
    """
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise FileNotFoundError(f"{where} has no class folders; expected {FOLDER_LAYOUT}")
    if classes is None:
        classes = [p.name for p in subdirs]
    else:
        unknown = [p.name for p in subdirs if p.name not in classes]
        if unknown:
            raise ValueError(
                f"{where} has {len(unknown)} folder(s) that are not {known_as} (e.g. {unknown[:3]}); name the class "
                f"folders {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}"
            )
    index, suffixes = {c: k for k, c in enumerate(classes)}, pillow_suffixes()
    files, labels, empty = [], [], []
    for sub in sorted(subdirs, key=lambda p: index[p.name]):
        found = _images_under(sub, suffixes)
        if not found:
            empty.append(sub.name)
        files += found
        labels += [index[sub.name]] * len(found)
    if empty:
        raise FileNotFoundError(
            f"{where}: {len(empty)} class folder(s) hold no images (e.g. {empty[:3]}); add images (any format Pillow "
            "reads: .jpg, .png, .bmp, .webp, .tif...) or remove the empty folders"
        )
    return files, labels, classes


def load_folder(
    root: str | None,
    transform,
    *,
    split: str = "test",
    option: str = "data.root",
    classes: list[str] | None = None,
    strict: bool = False,
) -> tuple[ImageFolderDataset, DatasetInfo]:
    """``data=folder``: the images under ``root/<class>/``, labelled by the sorted class folder names.

    Args:
        root: the folder of class folders.
        transform: PIL image -> tensor (the model's own preprocessing).
        split: what the manifest calls the set.
        option: the config option that named ``root`` (for messages).
        classes: the classes another folder of the same data has (the evaluation folder's, when this is the training
            folder): this folder must hold the same class folders.
        strict: an unreadable file stops the run (training data) instead of being skipped.
    """
    if root is None:
        raise FileNotFoundError(f"data=folder needs its images: set {option}=DIR, a folder of {FOLDER_LAYOUT}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{option}={root} does not exist or is not a folder")
    files, labels, found = class_folder_files(folder, f"{option}={root}")
    if classes is not None and found != list(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise ValueError(
            f"{option}={root} has other class folders than data.root (missing {missing[:3]}, extra {extra[:3]}); "
            "both must hold the same classes, which are labelled in sorted order"
        )
    dataset = ImageFolderDataset(files, labels, transform, root=folder, strict=strict)
    info = DatasetInfo("folder", split, str(folder), len(files), len(found), 3, classes=found)
    shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
    info.notes.append(f"class folders: {len(found)} classes labelled 0..{len(found) - 1} in sorted order ({shown}), "
                      f"{len(files)} images read as RGB at the model's preprocessing")  # fmt: skip
    return dataset, info
