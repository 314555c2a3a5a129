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
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
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
    #: for sets labelled in a subset of ImageNet-1k (ImageNet-A, -O, -R): the 1k output columns kept, in
    #: label order; ``num_classes`` is then the model's (1000) and labels index this list
    class_mask: list[int] | None = None


class TensorDataset(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with labels; items are float images in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor | None = None):
        self.images, self.labels = images, labels
        self.sample_ids = torch.arange(len(images)) if sample_ids is None else sample_ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float() / 255, self.labels[i], self.sample_ids[i]  # not in place: float images stay

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
            warnings.warn(f"skipping unreadable image {self.files[i]}: {err}", stacklevel=1)
            return None
        return image, torch.tensor(self.labels[i]), torch.tensor(self.sample_ids[i])

    def subset(self, n: int) -> ImageFolderDataset:
        return type(self)(self.files[:n], self.labels[:n], self.transform, self.sample_ids[:n])

    def raw(self, pipeline) -> RawImageDataset:
        """The same files and sample ids, with ``pipeline`` (compressed bytes -> tensor) instead of Pillow
        and the transform: how system noise re-decodes the dataset."""
        return RawImageDataset(self.files, self.labels, pipeline, self.sample_ids)


class RawImageDataset(ImageFolderDataset):
    """Image files handed to ``transform`` as their raw bytes (a :class:`robustart.noise.system.Pipeline`): the decoder
    is part of the transform. Files it cannot decode are skipped and counted, as in the parent class."""

    def load(self, path: Path) -> torch.Tensor:
        return self.transform(path.read_bytes())


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
    return ImageFolderDataset(files, labels, transform), info


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
            ImageFolderDataset(files, labels, transform),
            DatasetInfo(name, "test", str(folder), len(files), 1000, 3),
        )
        return dataset, info
    if name == "imagenet_sketch":
        files, labels = _wnid_images(folder)
        return ImageFolderDataset(files, labels, transform), DatasetInfo(name, "test", str(folder), len(files), 1000, 3)
    if name not in MASKED_SETS:
        raise ValueError(f"unknown shift set {name!r}; valid names: {', '.join(_LAYOUTS)}")
    wnids, mask = shift_wnids(name), class_mask(name)
    position = {w: i for i, w in enumerate(wnids)}
    files, labels = _labelled_files(
        folder, position, f"outside the 200 classes of {name}", f"; point data.root at the {name} folder itself"
    )
    dataset = ImageFolderDataset(files, labels, transform)
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
    in_set = ImageFolderDataset(in_files, [position[f.parent.name] for f in in_files], transform)
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
    datasets = {
        key: ImageFolderDataset(files, labels, transform, sample_ids=[ids[f"{f.parent.name}/{f.name}"] for f in files])
        for key, (files, labels) in listings.items()
    }
    n = len(ids)
    info = DatasetInfo("imagenet_c", "released", str(folder), n, 1000, 3)
    info.notes.append(f"released ImageNet-C: {len(datasets)} corruption x severity folders, {n} distinct images")
    return datasets, info


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
