"""Clean datasets as ``(float image in [0, 1], label, sample_id)`` items.

- ``fashion_mnist``: the official IDX files, from the cache dir, ``data.root``, the Debian package
  path, or downloaded from the official source with md5 checks.
- ``imagenet``: a val folder in the standard layout (``<wnid>/<image>``), labelled by the ImageNet-1k
  class index, with the model's own preprocessing.
- natural distribution shifts, with the model's own preprocessing: ``imagenet_a``, ``imagenet_r``
  (``<wnid>/`` folders of 200 classes, labelled by their position among the 200), ``imagenet_o`` (its
  200 folders as the out-of-distribution set, plus ImageNet val restricted to the same 200 classes),
  ``imagenet_sketch`` (``<wnid>/`` folders, 1000 classes) and ``imagenetv2`` (folders named by class
  index ``0..999``).

- one's own class folders (``folder``, :mod:`robustart.class_folders`), CIFAR-10/100 and the released
  CIFAR-10/100-C (:mod:`robustart.cifar`), with the model's own preprocessing.

Layout: Fashion-MNIST, the photo patches of ``fashion_mnist_ood`` and the released ImageNet-P videos are read
here; the ImageNet-family image folders are in :mod:`robustart.folders` and the in-memory dataset, the data
description and the batch iterator in :mod:`robustart.samples`, both re-exported here.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from robustart.folders import (
    IMAGE_SUFFIXES,
    MASKED_SETS,
    ImageFolderDataset,
    RawImageDataset,
    _data_root,
    _wnid_images,
    class_mask,
    eval_transform,
    imagenet_wnid_index,
    load_imagenet_c_folder,
    load_imagenet_folder,
    load_shift_folder,
    released_transform,
    shift_wnids,
)
from robustart.samples import DatasetInfo, SkipCounter, TensorDataset, iterate

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_URL",
    "IMAGE_SUFFIXES",
    "MASKED_SETS",
    "PATCH_PHOTOS",
    "DatasetInfo",
    "ImageFolderDataset",
    "RawImageDataset",
    "SkipCounter",
    "TensorDataset",
    "VideoError",
    "VideoFolderDataset",
    "class_mask",
    "eval_transform",
    "find_fashion_mnist",
    "imagenet_wnid_index",
    "iterate",
    "load_fashion_mnist",
    "load_imagenet_c_folder",
    "load_imagenet_folder",
    "load_imagenet_p_folder",
    "load_shift_folder",
    "photo_patches",
    "released_transform",
    "shift_wnids",
]

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
    info = DatasetInfo("fashion_mnist", split, str(folder), len(dataset), 10, 1, classes=list(FASHION_MNIST_CLASSES))
    return dataset, info


# ------------------------------------------------------------------------------------------------ small-scale OOD

#: scikit-image's photographs (bundled with the package, so available offline) cut into the out-of-distribution
#: set of ``fashion_mnist_ood``: natural scenes, faces, animals, textures and text, none of them clothing
PATCH_PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
                "hubble_deep_field", "moon", "page", "rocket", "text")  # fmt: skip


def photo_patches(n: int, size: int = 28, seed: int = 0) -> TensorDataset:
    """``n`` grey ``size`` px patches of scikit-image's photographs: squares of 48..160 px at random places
    (fixed by ``seed``), converted to grey (ITU-R 601 luma, as Pillow's ``L``) and shrunk with area
    averaging. Labels are 0; only the model's confidence on them is used."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, name)()).convert("L") for name in PATCH_PHOTOS]
    patches = np.empty((n, 1, size, size), dtype=np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(48, min(161, *photo.size)))
        left, top = (int(rng.integers(0, extent - side + 1)) for extent in photo.size)
        patch = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX)
        patches[i, 0] = np.asarray(patch)
    return TensorDataset(torch.from_numpy(patches), torch.zeros(n, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ ImageNet-P videos


class VideoError(ValueError):
    """A video that cannot be read, or whose frame count does not fit its perturbation."""


class VideoFolderDataset(Dataset):
    """Videos (``.mp4``) as ``(frames (T, C, H, W) float in [0, 1], label, sample_id)`` items.

    Decoded with OpenCV's FFmpeg reader (one ``VideoCapture`` per file, in the loader's workers; BGR to
    RGB), as the original ImageNet-P evaluation does. Frames are centre-cropped to ``size`` when larger
    (the released videos are 224 px: no resizing, as in the original).
    """

    def __init__(self, files: list[Path], labels: list[int], frames: int, size: int, sample_ids: list[int]) -> None:
        self.files, self.labels, self.frames, self.size, self.sample_ids = files, labels, frames, size, sample_ids

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import cv2

        capture = cv2.VideoCapture(str(self.files[i]))
        frames = []
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                frames.append(frame[..., ::-1])
        finally:
            capture.release()
        if len(frames) != self.frames:
            raise VideoError(f"video {self.files[i]} has {len(frames)} frames; its perturbation has {self.frames}")
        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)
        h, w = video.shape[-2:]
        if min(h, w) < self.size:
            raise VideoError(f"video {self.files[i]} is {h} x {w} px, smaller than the model's {self.size} px")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        video = video[..., top : top + self.size, left : left + self.size].contiguous()
        return video, torch.tensor(self.labels[i]), torch.tensor(self.sample_ids[i])

    def subset(self, n: int) -> VideoFolderDataset:
        return VideoFolderDataset(self.files[:n], self.labels[:n], self.frames, self.size, self.sample_ids[:n])


def load_imagenet_p_folder(
    root: str | None, perturbations: list[str], difficulties: list[int], size: int
) -> tuple[dict[tuple[str, int], VideoFolderDataset], DatasetInfo]:
    """The released ImageNet-P layout ``<root>/<perturbation>[_2|_3]/<wnid>/<name>.mp4``.

    The noise perturbations have one folder per difficulty (``gaussian_noise``, ``gaussian_noise_2``, ...);
    the others one folder, compared with step ``difficulty``. A video keeps its sample id (its rank among
    all ``<wnid>/<name>`` paths) in every folder.

    Returns:
        ``{(perturbation, difficulty): dataset}`` and the data description.
    """
    from robustart.noise.natural.perturbations import NOISE_PERTURBATIONS, num_frames

    folder = _data_root(
        root, "data=imagenet_p needs the released ImageNet-P folder: set data.root=/path/to/ImageNet-P "
        "(layout <perturbation>[_2|_3]/<wnid>/<name>.mp4)",
    )  # fmt: skip
    wanted = {
        (p, d): folder / (p if p not in NOISE_PERTURBATIONS or d == 1 else f"{p}_{d}")
        for p in perturbations
        for d in difficulties
    }
    missing = sorted({path.name for path in wanted.values() if not path.is_dir()})
    if missing:
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"data.root={root} lacks the folder(s) {missing[:4]}; present: {present}. "
            "Choose with noise.perturbations=[...] noise.difficulties=[...]"
        )
    index = imagenet_wnid_index()
    listings = {key: _wnid_images(path, suffixes={".mp4"})[0] for key, path in wanted.items()}
    names = sorted({f"{f.parent.name}/{f.name}" for files in listings.values() for f in files})
    ids = {name: i for i, name in enumerate(names)}
    datasets = {
        (p, d): VideoFolderDataset(
            files,
            [index[f.parent.name] for f in files],
            num_frames(p),
            size,
            [ids[f"{f.parent.name}/{f.name}"] for f in files],
        )
        for (p, d), files in listings.items()
    }
    info = DatasetInfo("imagenet_p", "released", str(folder), len(ids), 1000, 3)
    info.notes.append(f"released ImageNet-P: {len(datasets)} perturbation x difficulty folders, {len(ids)} videos")
    return datasets, info
