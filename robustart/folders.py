"""The ImageNet-family folder readers: ImageNet val, the natural distribution shifts (ImageNet-A, -O, -R,
-Sketch, ImageNetV2) and the released ImageNet-C, with the model's evaluation preprocessing. Images are decoded
lazily by Pillow; unreadable files yield ``None`` (skipped and counted by :func:`robustart.samples.iterate`).
Every file dataset knows its root, so the results name each sample's file (the ``path`` column).
:mod:`robustart.data` re-exports these names.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from robustart.errors import UserError
from robustart.samples import DatasetInfo

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


# ------------------------------------------------------------------------------------------------ ImageNet folders


@functools.lru_cache(maxsize=1)
def imagenet_wnid_index() -> dict[str, int]:
    """ImageNet-1k wnid -> class index (sorted wnids, as every torchvision/timm model uses). Read once:
    the released ImageNet-C reader lists up to 95 folders."""
    from timm.data import ImageNetInfo

    return {w: i for i, w in enumerate(ImageNetInfo().label_names())}


class ImageFolderDataset(Dataset):
    """Image files with their labels, read lazily by Pillow and ``transform``; unreadable files yield ``None``
    (skipped and counted by the loader), or, with ``strict`` (training data, whose batches cannot drop a sample),
    stop the run with a :class:`~robustart.errors.UserError` naming the file.

    ``root`` is the data's folder: the results name each file relative to it (:meth:`sample_columns`)."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform,
        sample_ids: list[int] | None = None,
        *,
        root: Path | None = None,
        strict: bool = False,
    ) -> None:
        self.files, self.labels, self.transform = files, labels, transform
        self.sample_ids = list(range(len(files))) if sample_ids is None else sample_ids
        self.root, self.strict = root, strict

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> torch.Tensor:
        """The model's input from one file: Pillow decodes, ``transform`` preprocesses."""
        from PIL import Image

        with Image.open(path) as img:
            return self.transform(img.convert("RGB"))

    def __getitem__(self, i: int):
        from PIL import UnidentifiedImageError

        try:
            image = self.load(self.files[i])
        except (OSError, UnidentifiedImageError, ValueError) as err:
            if self.strict:
                raise UserError(f"unreadable training image {self.files[i]} ({err}); repair or remove it") from None
            warnings.warn(f"skipping unreadable image {self.files[i]}: {err}", stacklevel=1)
            return None
        return image, torch.tensor(self.labels[i]), torch.tensor(self.sample_ids[i])

    def subset(self, n: int) -> ImageFolderDataset:
        """``n`` of the files, class-balanced (:func:`balanced_indices`), in their original order."""
        return self.take(balanced_indices(self.labels, n))

    def take(self, indices: list[int]) -> ImageFolderDataset:
        """The files at ``indices``, with their labels and sample ids."""
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return type(self)(pick(self.files), pick(self.labels), self.transform, pick(self.sample_ids), root=self.root,
                          strict=self.strict)  # fmt: skip

    def raw(self, pipeline) -> RawImageDataset:
        """The same files and sample ids, with ``pipeline`` (compressed bytes -> tensor) instead of Pillow
        and the transform: how system noise re-decodes the dataset."""
        return RawImageDataset(self.files, self.labels, pipeline, self.sample_ids, root=self.root)

    def sample_columns(self):
        """``sample_id`` and ``path``: each file relative to ``root`` (as given where there is no root)."""
        import pandas as pd

        paths = [(f.relative_to(self.root) if self.root is not None else f).as_posix() for f in self.files]
        return pd.DataFrame({"sample_id": self.sample_ids, "path": paths})


class RawImageDataset(ImageFolderDataset):
    """Image files handed to ``transform`` as their raw bytes (a :class:`robustart.noise.system.Pipeline`): the decoder
    is part of the transform. Files it cannot decode are skipped and counted, as in the parent class."""

    def load(self, path: Path) -> torch.Tensor:
        return self.transform(path.read_bytes())


def balanced_indices(labels: list[int], n: int) -> list[int]:
    """``n`` indices spread evenly over the classes and within each class, sorted: each class gets ``n // k``
    (the first ``n % k`` classes one more; a class short of its share gives the rest to the others), taken as
    every ``m / share``-th of its ``m`` files. Deterministic, and never the first classes only."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    members = [by_class[c] for c in sorted(by_class)]
    shares, left = [0] * len(members), min(n, len(labels))
    while left:  # round by round, one more to each class that still has files
        open_classes = [c for c, m in enumerate(members) if shares[c] < len(m)]
        for c in open_classes[:left] if left < len(open_classes) else open_classes:
            shares[c] += 1
            left -= 1
    return sorted(m[(j * len(m)) // q] for m, q in zip(members, shares) for j in range(q))


def interpolation_mode(name: str):
    """torchvision's interpolation mode named ``name`` (``bilinear``, ``bicubic``...); an unknown name is refused."""
    from torchvision import transforms as T

    modes = {m.value: m for m in T.InterpolationMode}
    if name not in modes:
        raise ValueError(f"unknown interpolation {name!r}; one of {sorted(modes)}")
    return modes[name]


def eval_transform(input_size: tuple[int, int, int], crop_pct: float, interpolation: str):
    """The model's evaluation preprocessing: resize the shorter side to ``size / crop_pct``, centre crop."""
    import math

    from torchvision import transforms as T

    size = input_size[-1]
    mode = interpolation_mode(interpolation)
    return T.Compose([T.Resize(math.floor(size / crop_pct), interpolation=mode), T.CenterCrop(size), T.ToTensor()])


def _data_root(root: str | None, unset_message: str) -> Path:
    """``data.root`` as an existing folder, or a FileNotFoundError that says what to set."""
    if root is None:
        raise FileNotFoundError(unset_message)
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist or is not a folder")
    return folder


def _files_in(folders: list[Path], suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """The files of each folder (sorted within it, folders in the given order) whose suffix is in ``suffixes``."""
    return [f for d in folders for f in sorted(d.iterdir()) if f.suffix.lower() in suffixes and f.is_file()]


def _labelled_files(
    folder: Path, labels: dict[str, int], outside: str, hint: str, suffixes=IMAGE_SUFFIXES
) -> tuple[list[Path], list[int]]:
    """Files under ``folder/<class>/`` (sorted) and their labels ``labels[<class>]``.

    A class folder missing from ``labels`` is an error (its files would be scored against the wrong
    classes): ``"<folder> has N folder(s) <outside> (e.g. ...)<hint>"``.
    """
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subdirs:
        raise FileNotFoundError(f"{folder} has no class folders; expected the layout <wnid>/<image>.JPEG")
    unknown = [p.name for p in subdirs if p.name not in labels]
    if unknown:
        raise ValueError(f"{folder} has {len(unknown)} folder(s) {outside} (e.g. {unknown[:3]}){hint}")
    files = _files_in(subdirs, suffixes)
    if not files:
        raise FileNotFoundError(f"{folder} has class folders but no images or videos ending in {sorted(suffixes)}")
    return files, [labels[f.parent.name] for f in files]


def _wnid_images(folder: Path, suffixes=IMAGE_SUFFIXES) -> tuple[list[Path], list[int]]:
    """Images (or other files, by ``suffixes``) under ``folder/<wnid>/`` and their ImageNet-1k class indices."""
    return _labelled_files(
        folder, imagenet_wnid_index(), "that are not ImageNet-1k wnids", "; expected the layout <wnid>/<image>.JPEG",
        suffixes,
    )  # fmt: skip


def load_imagenet_folder(root: str | None, split: str, transform) -> tuple[ImageFolderDataset, DatasetInfo]:
    folder = _data_root(
        root,
        "data=imagenet needs the ImageNet val folder and none is set: point at it with "
        "data.root=/path/to/imagenet/val (the standard layout: one folder per wnid, e.g. n01440764/*.JPEG)",
    )
    files, labels = _wnid_images(folder)
    info = DatasetInfo("imagenet", split, str(folder), len(files), 1000, 3)
    return ImageFolderDataset(files, labels, transform, root=folder), info


# ------------------------------------------------------------------------------------------------ distribution shifts

#: sets whose labels are 200 of the ImageNet-1k classes (the model's outputs are restricted to them)
MASKED_SETS = ("imagenet_a", "imagenet_o", "imagenet_r")


@functools.lru_cache(maxsize=1)
def _shift_classes() -> dict[str, list[str]]:
    from importlib import resources

    text = (resources.files("robustart") / "classes" / "imagenet_200.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def shift_wnids(name: str) -> list[str]:
    """The 200 wnids (sorted) of ``imagenet_a``, ``imagenet_o`` or ``imagenet_r``: label ``i`` is wnid ``i``."""
    classes = _shift_classes()
    if name not in classes:
        raise ValueError(f"no 200-class list for {name!r}; known: {', '.join(sorted(classes))}")
    return classes[name]


def class_mask(name: str) -> list[int]:
    """The ImageNet-1k output columns of the 200 classes of ``name``, in label order."""
    index = imagenet_wnid_index()
    return [index[w] for w in shift_wnids(name)]


_LAYOUTS = {
    "imagenet_a": "imagenet-a/<wnid>/*.jpg (200 classes)",
    "imagenet_o": "imagenet-o/<wnid>/*.jpg (200 classes)",
    "imagenet_r": "imagenet-r/<wnid>/*.jpg (200 classes)",
    "imagenet_sketch": "sketch/<wnid>/*.JPEG (1000 classes)",
    "imagenetv2": "<class index 0..999>/*.jpeg",
}


def load_shift_folder(name: str, root: str | None, transform, in_root: str | None = None):
    """A natural-distribution-shift set, labelled in the model's class space.

    Args:
        name: ``imagenet_a``, ``imagenet_r``, ``imagenet_o``, ``imagenet_sketch`` or ``imagenetv2``.
        root: the set's folder (layouts in :data:`_LAYOUTS`).
        transform: PIL image -> tensor (the model's evaluation preprocessing).
        in_root: for ``imagenet_o`` only: the ImageNet val folder, whose images of the same 200 classes are
            the in-distribution set.

    Returns:
        ``(dataset, info)``; for ``imagenet_o`` the dataset is ``{"in_distribution": ..., "imagenet_o": ...}``.
    """
    folder = _data_root(root, f"data={name} needs its folder: set data.root=/path/to/{_LAYOUTS[name]}")
    if name == "imagenetv2":
        subdirs = [p for p in folder.iterdir() if p.is_dir()]
        bad = [p.name for p in subdirs if not (p.name.isdigit() and 0 <= int(p.name) < 1000)]
        if not subdirs or bad:
            raise ValueError(
                f"data.root={root}: ImageNetV2 folders are class indices 0..999, found {bad[:3] or 'none'}"
            )
        subdirs.sort(key=lambda p: int(p.name))  # numerically: "10" after "9", as the class indices
        files = _files_in(subdirs)
        if not files:
            raise FileNotFoundError(f"{folder} has class folders but no images")
        labels = [int(f.parent.name) for f in files]
        dataset, info = (
            ImageFolderDataset(files, labels, transform, root=folder),
            DatasetInfo(name, "test", str(folder), len(files), 1000, 3),
        )
        return dataset, info
    if name == "imagenet_sketch":
        files, labels = _wnid_images(folder)
        dataset = ImageFolderDataset(files, labels, transform, root=folder)
        return dataset, DatasetInfo(name, "test", str(folder), len(files), 1000, 3)
    if name not in MASKED_SETS:
        raise ValueError(f"unknown shift set {name!r}; valid names: {', '.join(_LAYOUTS)}")
    wnids, mask = shift_wnids(name), class_mask(name)
    position = {w: i for i, w in enumerate(wnids)}
    files, labels = _labelled_files(
        folder, position, f"outside the 200 classes of {name}", f"; point data.root at the {name} folder itself"
    )
    dataset = ImageFolderDataset(files, labels, transform, root=folder)
    info = DatasetInfo(name, "test", str(folder), len(files), 1000, 3, class_mask=mask)
    info.notes.append(f"{name}: outputs restricted to its 200 ImageNet classes")
    if name != "imagenet_o":
        return dataset, info
    val = _data_root(
        in_root,
        "data=imagenet_o also needs the in-distribution set: set data.in_root=/path/to/imagenet/val (its images "
        "of the 200 ImageNet-O classes are used)",
    )
    present = [w for w in wnids if (val / w).is_dir()]
    if not present:
        raise FileNotFoundError(f"data.in_root={in_root} has none of the 200 ImageNet-O class folders")
    in_files = _files_in([val / w for w in present])
    if not in_files:
        raise FileNotFoundError(f"data.in_root={in_root} has no images in the ImageNet-O class folders")
    in_set = ImageFolderDataset(in_files, [position[f.parent.name] for f in in_files], transform, root=val)
    # sample ids unique over both sets (the results join each file's path on them): ImageNet-O's after these
    dataset.sample_ids = [len(in_files) + i for i in range(len(files))]
    info.num_samples = len(files) + len(in_files)
    info.notes.append(
        f"imagenet_o: {len(files)} out-of-distribution images; in-distribution: {len(in_files)} ImageNet images "
        f"of {len(present)} of its classes from {val}"
    )
    return {"in_distribution": in_set, "imagenet_o": dataset}, info


def released_transform(input_size: tuple[int, int, int]):
    """For pre-made 224 px sets (ImageNet-C): centre crop to the model's size, no resize, as the
    original evaluation (``CenterCrop(224)``, ToTensor) does."""
    from torchvision import transforms as T

    return T.Compose([T.CenterCrop(input_size[-1]), T.ToTensor()])


def load_imagenet_c_folder(
    root: str | None, corruptions: list[str] | None, severities: list[int], transform
) -> tuple[dict[tuple[str, int], ImageFolderDataset], DatasetInfo]:
    """The released ImageNet-C layout ``<root>/<corruption>/<severity>/<wnid>/<image>``.

    Args:
        root: the ImageNet-C folder.
        corruptions: names to read (``None``: every corruption folder present).
        severities: severities to read; a listed corruption lacking one is an error.
        transform: PIL image -> tensor.

    Returns:
        One dataset per ``(corruption, severity)`` and the data description. An image has the same
        sample id in every condition (its rank among all ``<wnid>/<file>`` paths), so conditions join.
    """
    folder = _data_root(
        root,
        "data=imagenet_c needs the released ImageNet-C folder: set data.root=/path/to/ImageNet-C "
        "(layout <corruption>/<severity>/<wnid>/<image>.JPEG)",
    )
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not present:
        raise FileNotFoundError(f"data.root={root} has no corruption folders (<corruption>/<severity>/<wnid>/)")
    names = corruptions if corruptions is not None else present
    missing = [
        f"{c}/{s}" for c in names for s in severities if not (folder / c / str(s)).is_dir()
    ]  # fmt: skip
    if missing:
        raise FileNotFoundError(
            f"data.root={root} lacks {len(missing)} corruption/severity folder(s), e.g. {missing[:3]}; present "
            f"corruptions: {present}. Choose a subset with noise.corruptions=[...] noise.severities=[...]"
        )
    listings = {(c, s): _wnid_images(folder / c / str(s)) for c in names for s in severities}
    paths = {f"{f.parent.name}/{f.name}" for files, _ in listings.values() for f in files}
    ids = {p: i for i, p in enumerate(sorted(paths))}
    datasets = {  # each path relative to its severity folder (<wnid>/<file>): the same in every condition
        (c, s): ImageFolderDataset(files, labels, transform, [ids[f"{f.parent.name}/{f.name}"] for f in files],
                                   root=folder / c / str(s))
        for (c, s), (files, labels) in listings.items()
    }  # fmt: skip
    n = len(ids)
    info = DatasetInfo("imagenet_c", "released", str(folder), n, 1000, 3)
    info.notes.append(f"released ImageNet-C: {len(datasets)} corruption x severity folders, {n} distinct images")
    return datasets, info
