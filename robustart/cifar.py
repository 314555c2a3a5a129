"""CIFAR-10 and CIFAR-100 (``data=cifar10``, ``data=cifar100``) and their released corruptions, CIFAR-10-C and
CIFAR-100-C (``data=cifar10_c``, ``data=cifar100_c``).

CIFAR comes from ``data.root`` in either layout:

- class folders ``<root>/train/<class>/`` and ``<root>/test/<class>/`` (any image format Pillow reads), labelled
  by CIFAR's own class order (the folders must carry CIFAR's class names), never by sorted folder order;
- torchvision's ``<root>/cifar-10-batches-py/`` or ``<root>/cifar-100-python/``: the official pickled batches, read
  here without running pickled code, their md5 compared with torchvision's list (the manifest notes the outcome);

or, with ``data.root`` unset, downloaded once by torchvision (the archive's md5 checked) into
``<cache>/datasets/<name>/``. The corrupted sets are the released ``<corruption>.npy`` arrays (5 severities x N
images, uint8 NHWC, severity 1 first), memory-mapped, and ``labels.npy``. Every image gets the model's own
preprocessing (for a 32 px model without a crop: nothing but the conversion to floats).
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from robustart.class_folders import class_folder_files
from robustart.folders import ImageFolderDataset, _data_root, balanced_indices
from robustart.samples import DatasetInfo

log = logging.getLogger("robustart")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: CIFAR-100's fine labels in label order (the ``fine_label_names`` of its ``meta`` file)
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)  # fmt: skip
CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
#: the released corrupted sets and the set they corrupt
CORRUPTED = {"cifar10_c": "cifar10", "cifar100_c": "cifar100"}
SPLITS = ("train", "test")


class ArrayImageDataset(Dataset):
    """Images of a uint8 ``(N, H, W, C)`` array as ``(transform(image), label, sample_id)`` items.

    ``images`` is the array, or the path of a ``.npy`` file holding it: memory-mapped on first use (in each
    DataLoader worker, which receives the path, not a copy). ``rows`` are the array's images that make the set, in
    order; ``labels`` and ``sample_ids`` go with them. ``transform`` takes a PIL image (``None``: floats as stored).
    """

    def __init__(self, images, labels, transform, sample_ids=None, rows=None) -> None:
        self.images, self.transform = images, transform
        self.labels = [int(v) for v in labels]
        self.rows = list(range(len(self.labels))) if rows is None else [int(r) for r in rows]
        self.sample_ids = list(range(len(self.labels))) if sample_ids is None else [int(v) for v in sample_ids]
        self._mapped = None

    def array(self) -> np.ndarray:
        if not isinstance(self.images, (str, Path)):
            return self.images
        if self._mapped is None:
            self._mapped = np.load(self.images, mmap_mode="r", allow_pickle=False)
        return self._mapped

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mapped": None}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        pixels = np.asarray(self.array()[self.rows[i]])
        if self.transform is None:
            image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)
        else:
            from PIL import Image

            image = self.transform(Image.fromarray(pixels))
        return image, torch.tensor(self.labels[i]), torch.tensor(self.sample_ids[i])

    def subset(self, n: int) -> ArrayImageDataset:
        """``n`` of the images, class-balanced (:func:`~robustart.folders.balanced_indices`), in their order."""
        return self.take(balanced_indices(self.labels, n))

    def take(self, indices: list[int]) -> ArrayImageDataset:
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return ArrayImageDataset(self.images, pick(self.labels), self.transform, pick(self.sample_ids), pick(self.rows))


# ------------------------------------------------------------------------------------------------ CIFAR-10/100


def _torchvision_set(name: str):
    from torchvision import datasets

    return datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100


def load_cifar(name: str, root: str | None, cache_dir: Path, split: str, transform, *, strict: bool = False):
    """``(dataset, info)``: ``split`` (``train`` or ``test``) of CIFAR-10 or -100 in the layout ``root`` holds, or
    downloaded into the cache when ``root`` is ``None``. ``strict``: an unreadable class-folder file stops the run
    (training data) instead of being skipped."""
    title, classes = TITLES[name], list(CLASSES[name])
    if split not in SPLITS:
        raise ValueError(f"data={name} has the splits train and test (data.split, data.train_split), got {split!r}")
    folder = _download(name, Path(cache_dir)) if root is None else _data_root(root, "")
    where = f"data.root={root}" if root is not None else str(folder)
    if any((folder / s).is_dir() for s in SPLITS):  # class folders
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"{where} has CIFAR class folders but no {split}/ folder ({split}/<class>/<image>)")
        files, labels, _ = class_folder_files(folder / split, f"{where} ({split}/)", classes, f"{title} classes")
        dataset = ImageFolderDataset(files, labels, transform, root=folder, strict=strict)
        info = DatasetInfo(name, split, str(folder), len(files), len(classes), 3, classes=classes)
        info.notes.append(f"{title} {split}: {len(files)} images from class folders {folder}/{split}/<class>/, "
                          f"labelled in {title}'s class order")  # fmt: skip
        if all(f.suffix.lower() in (".jpg", ".jpeg") for f in files):
            info.notes.append(f"the images are JPEG files, a re-encoding and not {title}'s official pixels: quote "
                              f"results as on a JPEG copy of {title}")  # fmt: skip
        return dataset, info
    tv = _torchvision_set(name)
    batches = folder / tv.base_folder if (folder / tv.base_folder).is_dir() else folder
    if not (batches / tv.test_list[0][0]).is_file() and not (batches / tv.train_list[0][0]).is_file():
        raise FileNotFoundError(
            f"{where} holds neither {title} layout: class folders {split}/<class>/ (e.g. {split}/{classes[0]}/) nor "
            f"torchvision's {tv.base_folder}/; point data.root at the folder that holds one (unset, it is downloaded)"
        )
    images, labels, official = _read_batches(batches, name, split)
    dataset = ArrayImageDataset(images, labels, transform)
    info = DatasetInfo(name, split, str(batches), len(labels), len(classes), 3, classes=classes)
    info.notes.append(
        f"{title} {split}: {len(labels)} images from torchvision's layout {batches}, "
        + ("the official files (md5 as torchvision lists them)" if official else "NOT the official files (md5 differ)")
    )
    return dataset, info


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts of lists, strings and NumPy arrays) and nothing that runs other code."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    }  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is no part of a CIFAR batch")
        return super().find_class(module, name)


def _read_batches(folder: Path, name: str, split: str) -> tuple[np.ndarray, list[int], bool]:
    """``(images (N, 32, 32, 3) uint8, labels, whether every file has its official md5)`` of torchvision's layout."""
    tv, title, classes = _torchvision_set(name), TITLES[name], CLASSES[name]
    listed = tv.train_list if split == "train" else tv.test_list
    missing = [f for f, _ in listed if not (folder / f).is_file()]
    if missing:
        every = ", ".join(f for f, _ in tv.train_list + tv.test_list)
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} of {title}'s {split} split (torchvision's "
                                f"{tv.base_folder}/ holds {every})")  # fmt: skip
    images, labels, official = [], [], True
    for file, md5 in [*listed, (tv.meta["filename"], tv.meta["md5"])]:
        path = folder / file
        if not path.is_file():  # the meta file only names the classes
            continue
        payload = path.read_bytes()
        official &= hashlib.md5(payload, usedforsecurity=False).hexdigest() == md5
        try:
            entry = _BatchUnpickler(io.BytesIO(payload), encoding="latin1").load()
            if file == tv.meta["filename"]:
                names = [str(n) for n in entry[tv.meta["key"]]]
                if names != list(classes):
                    raise ValueError(f"its classes {names[:3]}... are not {title}'s ({', '.join(classes[:3])}, ...)")
                continue
            data = np.asarray(entry["data"])
            batch = [int(v) for v in entry["labels" if "labels" in entry else "fine_labels"]]
        except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError, AttributeError) as err:
            raise ValueError(f"{path} is not a {title} batch file: {err}") from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(batch) != len(data):
            raise ValueError(f"{path}: data of shape {data.shape} ({data.dtype}) and {len(batch)} labels; a {title} "
                             "batch holds N x 3072 uint8 pixels (3 x 32 x 32, channels first), N labels")  # fmt: skip
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += batch
    if labels and not 0 <= min(labels) <= max(labels) < len(classes):
        raise ValueError(f"{folder}: labels outside 0..{len(classes) - 1} ({title} has {len(classes)} classes)")
    return np.ascontiguousarray(np.concatenate(images)), labels, official


def _download(name: str, cache_dir: Path) -> Path:
    """The cache's copy of torchvision's layout, downloaded (md5-checked archive) when it is not complete."""
    tv, target = _torchvision_set(name), cache_dir / "datasets" / name
    if all((target / tv.base_folder / f).is_file() for f, _ in tv.train_list + tv.test_list):
        return target
    log.info("downloading %s from %s into %s", TITLES[name], tv.url, target)
    try:
        tv(str(target), train=True, download=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise FileNotFoundError(
            f"data={name}: data.root is not set and downloading {tv.url} into {target} failed ({err}); set "
            f"data.root=DIR to a local copy: the folder holding torchvision's {tv.base_folder}/, or class folders "
            "train/<class>/ and test/<class>/"
        ) from None
    return target


# ------------------------------------------------------------------------------------------------ CIFAR-10/100-C


def load_cifar_c(name: str, root: str | None, corruptions: list[str] | None, severities: list[int], transform):
    """The released ``<root>/<corruption>.npy`` (5 x N images, severity 1 first) and ``<root>/labels.npy``.

    Args:
        name: ``cifar10_c`` or ``cifar100_c``.
        corruptions: names to read (``None``: every corruption file present).
        severities: severities to read (1..5).
        transform: PIL image -> tensor.

    Returns:
        ``{(corruption, severity): dataset}`` and the data description; an image has the same sample id (its index
        among the N) in every condition, so conditions join.
    """
    from robustart.noise.natural import CORRUPTIONS

    base = CORRUPTED[name]
    title, classes = f"{TITLES[base]}-C", list(CLASSES[base])
    folder = _data_root(root, f"data={name} needs the released {title} folder: set data.root=/path/to/{title} "
                              "(<corruption>.npy and labels.npy)")  # fmt: skip
    present = sorted(p.stem for p in folder.glob("*.npy") if p.stem in CORRUPTIONS)
    names = list(corruptions) if corruptions is not None else present
    missing = [f"{c}.npy" for c in names if c not in present]
    missing += [] if (folder / "labels.npy").is_file() else ["labels.npy"]
    if missing or not names:
        raise FileNotFoundError(
            f"data.root={root} lacks {', '.join(missing) or 'every <corruption>.npy'} of the released {title} "
            f"(present corruptions: {', '.join(present) or 'none'}); choose others with noise.corruptions=[...]"
        )
    labels = _npy(folder / "labels.npy")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{folder / 'labels.npy'} holds {labels.dtype} of shape {labels.shape}; expected (N,) ints")
    n = None
    for c in names:
        array = _npy(folder / f"{c}.npy", mmap=True)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] % 5:
            raise ValueError(f"{folder / f'{c}.npy'} holds {array.dtype} of shape {array.shape}; the released "
                             f"{title} files hold uint8 (5 x N, H, W, 3): N images per severity, 1 first")  # fmt: skip
        if n is not None and array.shape[0] // 5 != n:
            raise ValueError(f"{folder}: {c}.npy holds {array.shape[0] // 5} images per severity, {names[0]}.npy {n}")
        n = array.shape[0] // 5
    if not n:
        raise ValueError(f"{folder / f'{names[0]}.npy'} holds no images")
    if len(labels) not in (n, 5 * n):
        raise ValueError(f"{folder / 'labels.npy'} holds {len(labels)} labels for {n} images x 5 severities")
    blocks = labels.reshape(-1, n)
    if (blocks != blocks[0]).any():
        raise ValueError(f"{folder / 'labels.npy'}: the labels of the 5 severities differ; expected one label list "
                         "repeated for each severity, as released")  # fmt: skip
    first = blocks[0].astype(np.int64)
    if not 0 <= first.min() <= first.max() < len(classes):
        raise ValueError(f"{folder / 'labels.npy'}: labels outside 0..{len(classes) - 1} ({title})")
    datasets = {
        (c, s): ArrayImageDataset(folder / f"{c}.npy", first, transform, rows=range((s - 1) * n, s * n))
        for c in names
        for s in severities
    }
    info = DatasetInfo(name, "released", str(folder), n, len(classes), 3, classes=classes)
    info.notes.append(f"released {title}: {len(names)} corruption(s) x {len(severities)} severities of {n} images "
                      "(memory-mapped .npy), the model's own preprocessing")  # fmt: skip
    return datasets, info


def _npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a NumPy .npy array file: {err}") from None
