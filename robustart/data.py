"""Clean datasets as ``(float image in [0, 1], label, sample_id)`` items.

- ``fashion_mnist``: the official IDX files, from the cache dir, ``data.root``, the Debian package
  path, or downloaded from the official source with md5 checks.
- ``imagenet``: a val folder in the standard layout (``<wnid>/<image>``), labelled by the ImageNet-1k
  class index, with the model's own preprocessing.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import shutil
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 of the official .gz files (as published with the dataset)
FASHION_MNIST_FILES = {
    "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
              ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
    "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6e940231f85"),
             ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
}  # fmt: skip
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class DatasetInfo:
    """What the manifest records about the clean data."""

    name: str
    split: str
    root: str
    num_samples: int
    num_classes: int
    in_chans: int
    notes: list[str] = field(default_factory=list)


class TensorDataset(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with labels; items are float images in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor | None = None):
        self.images, self.labels = images, labels
        self.sample_ids = torch.arange(len(images)) if sample_ids is None else sample_ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float().div_(255), self.labels[i], self.sample_ids[i]

    def subset(self, n: int) -> TensorDataset:
        return TensorDataset(self.images[:n], self.labels[:n], self.sample_ids[:n])


# ------------------------------------------------------------------------------------------------ Fashion-MNIST


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {shape}, got {array.size} bytes")
    return array.reshape(shape)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _download_fashion_mnist(target: Path, split: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for filename, md5 in FASHION_MNIST_FILES[split]:
        dest = target / filename
        if dest.is_file() and _md5(dest) == md5:
            continue
        tmp = dest.with_suffix(".part")
        log.info("downloading %s", FASHION_MNIST_URL + filename)
        with urllib.request.urlopen(FASHION_MNIST_URL + filename, timeout=30) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        if _md5(tmp) != md5:
            tmp.unlink()
            raise ValueError(f"downloaded {filename} fails its md5 check: the download is corrupt; retry")
        tmp.replace(dest)


def find_fashion_mnist(root: str | None, cache_dir: Path, split: str, download: bool = True) -> Path:
    """The folder holding the Fashion-MNIST files of ``split``: ``root`` if given, else the cache,
    else the Debian package's path, else a fresh download into the cache."""
    names = [f for f, _ in FASHION_MNIST_FILES[split]]
    if root is not None:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data.root={root} does not exist; point it at a folder with {names}")
        if not all((folder / n).is_file() for n in names):
            raise FileNotFoundError(f"data.root={root} lacks the Fashion-MNIST files {names} (IDX .gz, as published)")
        return folder
    candidates = [cache_dir / "datasets" / "fashion-mnist", DEBIAN_FASHION_MNIST]
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    if not download:
        raise FileNotFoundError("Fashion-MNIST not found")
    try:
        _download_fashion_mnist(candidates[0], split)
    except OSError as err:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {candidates[0]} or {DEBIAN_FASHION_MNIST}, and the download failed ({err}). "
            "Install the Debian package dataset-fashion-mnist, or set data.root to a folder with the IDX files."
        ) from None
    return candidates[0]


def load_fashion_mnist(root: str | None, cache_dir: Path, split: str) -> tuple[TensorDataset, DatasetInfo]:
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    folder = find_fashion_mnist(root, cache_dir, split)
    (img_file, _), (lbl_file, _) = FASHION_MNIST_FILES[split]
    images, labels = _read_idx(folder / img_file), _read_idx(folder / lbl_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    dataset = TensorDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    info = DatasetInfo("fashion_mnist", split, str(folder), len(dataset), 10, 1)
    return dataset, info


# ------------------------------------------------------------------------------------------------ ImageNet folders


@functools.lru_cache(maxsize=1)
def imagenet_wnid_index() -> dict[str, int]:
    """ImageNet-1k wnid -> class index (sorted wnids, as every torchvision/timm model uses). Read once:
    the released ImageNet-C reader lists up to 95 folders."""
    from timm.data import ImageNetInfo

    return {w: i for i, w in enumerate(ImageNetInfo().label_names())}


class ImageFolderDataset(Dataset):
    """Images under ``<root>/<wnid>/``; unreadable files yield ``None`` (skipped and counted by the loader)."""

    def __init__(self, files: list[Path], labels: list[int], transform, sample_ids: list[int] | None = None) -> None:
        self.files, self.labels, self.transform = files, labels, transform
        self.sample_ids = list(range(len(files))) if sample_ids is None else sample_ids

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.files[i]) as img:
                image = self.transform(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            warnings.warn(f"skipping unreadable image {self.files[i]}: {err}", stacklevel=1)
            return None
        return image, torch.tensor(self.labels[i]), torch.tensor(self.sample_ids[i])

    def subset(self, n: int) -> ImageFolderDataset:
        return ImageFolderDataset(self.files[:n], self.labels[:n], self.transform, self.sample_ids[:n])


def eval_transform(input_size: tuple[int, int, int], crop_pct: float, interpolation: str):
    """The model's evaluation preprocessing: resize the shorter side to ``size / crop_pct``, centre crop."""
    import math

    from torchvision import transforms as T

    size = input_size[-1]
    modes = {m.value: m for m in T.InterpolationMode}
    if interpolation not in modes:
        raise ValueError(f"unknown interpolation {interpolation!r}; one of {sorted(modes)}")
    return T.Compose(
        [T.Resize(math.floor(size / crop_pct), interpolation=modes[interpolation]), T.CenterCrop(size), T.ToTensor()]
    )


def _data_root(root: str | None, unset_message: str) -> Path:
    """``data.root`` as an existing folder, or a FileNotFoundError that says what to set."""
    if root is None:
        raise FileNotFoundError(unset_message)
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist or is not a folder")
    return folder


def _wnid_images(folder: Path) -> tuple[list[Path], list[int]]:
    """Images under ``folder/<wnid>/`` (sorted) and their ImageNet-1k class indices."""
    index = imagenet_wnid_index()
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subdirs:
        raise FileNotFoundError(f"{folder} has no class folders; expected the layout <wnid>/<image>.JPEG")
    unknown = [p.name for p in subdirs if p.name not in index]
    if unknown:
        raise ValueError(
            f"{folder} has folders that are not ImageNet-1k wnids (e.g. {unknown[:3]}); "
            "expected the layout <wnid>/<image>.JPEG"
        )
    files = [f for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    if not files:
        raise FileNotFoundError(f"{folder} has wnid folders but no images ({sorted(IMAGE_SUFFIXES)})")
    return files, [index[f.parent.name] for f in files]


def load_imagenet_folder(root: str | None, split: str, transform) -> tuple[ImageFolderDataset, DatasetInfo]:
    folder = _data_root(
        root,
        "data=imagenet needs the ImageNet val folder and none is set: point at it with "
        "data.root=/path/to/imagenet/val (the standard layout: one folder per wnid, e.g. n01440764/*.JPEG)",
    )
    files, labels = _wnid_images(folder)
    info = DatasetInfo("imagenet", split, str(folder), len(files), 1000, 3)
    return ImageFolderDataset(files, labels, transform), info


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
    datasets = {
        key: ImageFolderDataset(files, labels, transform, sample_ids=[ids[f"{f.parent.name}/{f.name}"] for f in files])
        for key, (files, labels) in listings.items()
    }
    n = len(ids)
    info = DatasetInfo("imagenet_c", "released", str(folder), n, 1000, 3)
    info.notes.append(f"released ImageNet-C: {len(datasets)} corruption x severity folders, {n} distinct images")
    return datasets, info


# ------------------------------------------------------------------------------------------------ loading


class SkipCounter:
    """Collate function that drops unreadable samples (``None``) and counts them."""

    def __init__(self) -> None:
        self.skipped = 0

    def __call__(self, batch):
        from torch.utils.data import default_collate

        kept = [b for b in batch if b is not None]
        return default_collate(kept) if kept else None, len(batch) - len(kept)


def iterate(dataset: Dataset, batch_size: int, num_workers: int = 0, counter: SkipCounter | None = None):
    """Yield ``(images, labels, sample_ids)`` batches in dataset order, skipping unreadable samples."""
    counter = counter or SkipCounter()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=counter,
        pin_memory=torch.cuda.is_available(),
    )
    for batch, skipped in loader:
        counter.skipped += skipped
        if batch is not None:
            yield tuple(batch)
