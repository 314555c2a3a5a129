"""The shape-texture cue-conflict stimuli of Geirhos et al. (ICLR 2019; CC BY 4.0): ``data=cue_conflict``.

1,280 PNG images, 224x224, ``<shape>/<shape><i>-<texture><j>.png`` for 16 categories. Read from ``data.root``,
or (with no root) from the cache folder, downloaded there once from the public texture-vs-shape repository with
a sha256 per file (``robustart/classes/cue_conflict.sha256``). Images are fed whole, resized to the model's input
size only if it differs, never centre-cropped (the published protocol); the model's own mean and std apply
inside it. Labels index the 16 categories (alphabetical); the scoring is in
:mod:`robustart.evaluation.shape_bias`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from robustart.folders import ImageFolderDataset, interpolation_mode
from robustart.samples import DatasetInfo

log = logging.getLogger("robustart")

#: where the stimuli are published (the texture-vs-shape repository's style-transfer set)
SOURCE = "https://raw.githubusercontent.com/rgeirhos/texture-vs-shape/master/stimuli/style-transfer-preprocessed-512"
#: ``<shape><i>-<texture><j>.png``
FILE_NAME = re.compile(r"^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$")


class CueConflictDataset(ImageFolderDataset):
    """Cue-conflict images labelled by shape category, with each file's path, shape and texture category as
    per-sample columns of the results (:meth:`sample_columns`)."""

    def __init__(self, files, labels, transform, sample_ids=None, *, root: Path, textures: list[str]) -> None:
        super().__init__(files, labels, transform, sample_ids, root=root)
        self.textures = textures

    def take(self, indices: list[int]) -> CueConflictDataset:
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return CueConflictDataset(pick(self.files), pick(self.labels), self.transform, pick(self.sample_ids),
                                  root=self.root, textures=pick(self.textures))  # fmt: skip

    def sample_columns(self):
        """``sample_id``, ``path`` (relative to the root), ``shape_category`` and ``texture_category``."""
        return (
            super()
            .sample_columns()
            .assign(shape_category=[f.parent.name for f in self.files], texture_category=self.textures)
        )


def checksums() -> dict[str, str]:
    """``{relative path: sha256}`` of the 1,280 published stimuli."""
    text = resources.files("robustart").joinpath("classes/cue_conflict.sha256").read_text()
    return {path: digest for digest, path in (line.split() for line in text.splitlines() if line.strip())}


def transform_for(input_size, interpolation: str):
    """Whole images at the model's input size: resized only where the size differs, never cropped."""
    from torchvision import transforms as T

    mode = interpolation_mode(interpolation)
    return T.Compose([T.Resize(tuple(input_size[-2:]), interpolation=mode), T.ToTensor()])


def load_cue_conflict(root: str | None, cache_dir: Path, transform) -> tuple[CueConflictDataset, DatasetInfo]:
    """The stimuli under ``root`` (or the cache's copy, downloaded when missing), labelled by shape category.

    Every file under a category folder must be named ``<shape><i>-<texture><j>.png`` with both categories among
    the 16 and the shape equal to its folder; anything else is an error naming the file."""
    from robustart.evaluation.shape_bias import category_indices

    names = list(category_indices())
    folder = _stimuli_folder(root, cache_dir)
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not set(present) & set(names):
        raise FileNotFoundError(
            f"data.root={folder} has none of the 16 cue-conflict category folders ({', '.join(names)}); expected "
            "the layout <shape>/<shape><i>-<texture><j>.png"
        )
    strangers = [p for p in present if p not in names]
    if strangers:
        raise ValueError(f"data.root={folder}: {strangers[0]}/ is not one of the 16 categories ({', '.join(names)})")
    files, labels, textures = [], [], []
    for shape in present:
        for file in sorted(f for f in (folder / shape).iterdir() if not f.name.startswith(".")):
            match = FILE_NAME.match(file.name)
            if not match or match.group(1) != shape or match.group(3) not in names:
                raise ValueError(
                    f"data.root={folder}: {shape}/{file.name} is not a cue-conflict stimulus name: expected "
                    f"{shape}<i>-<texture><j>.png with <texture> one of the 16 categories"
                )
            files.append(file)
            labels.append(names.index(shape))
            textures.append(match.group(3))
    if not files:
        raise FileNotFoundError(f"data.root={folder} has category folders but no stimuli")
    dataset = CueConflictDataset(files, labels, transform, root=folder, textures=textures)
    same = sum(t == f.parent.name for t, f in zip(textures, files))
    info = DatasetInfo("cue_conflict", "stimuli", str(folder), len(files), 1000, 3,
                       class_groups=dict(category_indices()))  # fmt: skip
    info.notes.append(
        f"cue-conflict stimuli: {len(files)} images fed whole at the model's input size (no centre crop); "
        f"{same} whose shape and texture agree are evaluated but left out of shape bias, {len(files) - same} count"
    )
    return dataset, info


def _stimuli_folder(root: str | None, cache_dir: Path) -> Path:
    if root is not None:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data.root={root} does not exist or is not a folder")
        return folder
    folder = Path(cache_dir) / "cue-conflict"
    expected = checksums()
    missing = [p for p in expected if not (folder / p).is_file()]
    if missing:
        download(folder, {p: expected[p] for p in missing})
    return folder


def download(folder: Path, files: dict[str, str]) -> None:
    """Fetch ``files`` (relative path -> sha256) from :data:`SOURCE` into ``folder``, each checked before it is
    moved into place; a failure names the file and says how to use a local copy instead."""
    log.info("downloading %d cue-conflict stimuli from %s into %s", len(files), SOURCE, folder)
    for done, (path, digest) in enumerate(sorted(files.items()), 1):
        url = f"{SOURCE}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise FileNotFoundError(
                f"cannot download the cue-conflict stimuli ({url}: {err}); set data.root to a local copy "
                "(<shape>/<shape><i>-<texture><j>.png)"
            ) from None
        if hashlib.sha256(payload).hexdigest() != digest:
            raise ValueError(f"downloaded {url} does not match its sha256 {digest}; nothing was kept")
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(payload)
        partial.replace(target)
        if done % 100 == 0 or done == len(files):
            log.info("cue-conflict: %d of %d files", done, len(files))
