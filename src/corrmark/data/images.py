"""Single-image collections: a folder of images, MTFL faces (5 landmarks) and the CUB birds subset (labels only).

Each is a sequence of ``ImageSample`` dicts (see ``corrmark.data.base``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DatasetError
from ..io import IMAGE_EXTENSIONS, write_text_atomic
from ..registry import register_image_dataset
from .base import ImageDataset, check_files_exist, check_split, require_dir, require_file

NO_POINTS = np.zeros((0, 2), dtype=np.float64)


def _record(path: Path, points=NO_POINTS, label: int | None = None, category: str = "", attributes=None) -> dict:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return {
        "path": str(path),
        "points": points,
        "valid": np.isfinite(points).all(axis=1),
        "label": label,
        "category": category,
        "attributes": dict(attributes or {}),
    }


@register_image_dataset("image-folder")
class ImageFolder(ImageDataset):
    """Every image file under ``root`` (recursive, sorted by relative path).

    Files whose header cannot be read are skipped and listed in ``skipped`` as ``(path, reason)``; ``describe()``
    reports their number. ``category`` is the relative parent folder ("" for files directly in ``root``) and
    ``label`` its index among the sorted categories. No landmarks (``points`` is (0, 2)).

    ``split``: ``None``/``"all"`` keeps every image; ``"val"`` keeps every ``VAL_EVERY``-th image of each category
    (its 10th, 20th, ... by sorted path) and ``"train"`` the others, so a held-out validation set needs no list file.
    """

    name = "image-folder"
    SPLITS = {None: "all", "all": "all", "train": "train", "trn": "train", "val": "val", "validation": "val"}
    VAL_EVERY = 10

    def __init__(self, root, split=None, *, extensions=IMAGE_EXTENSIONS, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.split = check_split(split, self.SPLITS, "image folder")
        require_dir(self.root, "image folder")
        self.skipped: list[tuple[str, str]] = []
        files = sorted(
            (p for p in self.root.rglob("*") if p.suffix.lower() in extensions and p.is_file()),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        readable = [path for path in files if self._readable(path)]
        if not readable:
            raise DatasetError(f"image folder {self.root}: no readable image ({len(self.skipped)} unreadable files)")
        categories = sorted({self._folder(p) for p in readable})
        seen = dict.fromkeys(categories, 0)
        for path in readable:
            category = self._folder(path)
            seen[category] += 1
            if self.split != "all" and (seen[category] % self.VAL_EVERY == 0) != (self.split == "val"):
                continue
            self._records.append(_record(path, label=categories.index(category), category=category))

    def _folder(self, path: Path) -> str:
        relative = path.parent.relative_to(self.root).as_posix()
        return "" if relative == "." else relative

    def _readable(self, path: Path) -> bool:
        try:
            with Image.open(path) as handle:
                handle.size  # the header is parsed on open; pixel data is decoded later
            return True
        except (OSError, SyntaxError, ValueError) as error:
            self.skipped.append((str(path), f"{type(error).__name__}: {error}"))
            return False

    def describe(self) -> dict:
        info = super().describe()
        info.update(skipped=len(self.skipped), first_skipped=self.skipped[0][0] if self.skipped else None)
        return info


@register_image_dataset("mtfl")
class MTFL(ImageDataset):
    """MTFL faces (Zhang et al., ECCV 2014): ``training.txt`` (10,000) or ``testing.txt`` (2,995 AFLW faces).

    Each line: ``path x1..x5 y1..y5 gender smile glasses pose`` (all x first, then all y); paths may use Windows
    backslashes. Landmarks (K = 5): left eye, right eye, nose tip, left mouth corner, right mouth corner (image-left
    side), used as given (pixel coordinates, origin at the top-left). ``attributes`` holds gender (1 male, 2 female),
    smile and glasses (1 yes, 2 no) and pose (1 left profile .. 5 right profile); ``category`` is ``"face"``.
    """

    name = "mtfl"
    SPLITS = {None: "train", "train": "train", "trn": "train", "test": "test"}
    FILES = {"train": "training.txt", "test": "testing.txt"}
    ATTRIBUTES = ("gender", "smile", "glasses", "pose")

    def __init__(self, root, split=None, *, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.split = check_split(split, self.SPLITS, "MTFL")
        self.list_file = require_file(self.root / self.FILES[self.split], "MTFL")
        for line_number, line in enumerate(self.list_file.read_text().splitlines(), start=1):
            if line.strip():
                self._records.append(self._parse(line, line_number))
        check_files_exist([r["path"] for r in self._records], "MTFL", self.list_file)

    def _parse(self, line: str, line_number: int) -> dict:
        fields = line.split()
        try:
            values = [float(v) for v in fields[1:15]]
        except ValueError:
            values = []
        if len(values) != 14:
            raise DatasetError(f"MTFL: {self.list_file} line {line_number}: expected a path and 14 numbers")
        points = np.stack([values[0:5], values[5:10]], axis=1)  # x1..x5 then y1..y5
        attributes = dict(zip(self.ATTRIBUTES, (int(v) for v in values[10:14])))
        path = self.root / fields[0].replace("\\", "/")
        return _record(path, points, category="face", attributes=attributes)

    def describe(self) -> dict:
        info = super().describe()
        info.update(split=self.split, list_file=str(self.list_file), landmarks=5, coordinates="0-based as given")
        return info


def center_crop_box(height: int, width: int, fraction: float) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the centred box keeping ``fraction`` of each side (whole pixels)."""
    if not 0 < fraction <= 1:
        raise DatasetError(f"crop fraction must lie in (0, 1], got {fraction}")
    crop_w, crop_h = max(1, round(width * fraction)), max(1, round(height * fraction))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def write_center_cropped_mtfl(root, out, fraction: float, *, quality: int = 95, progress: bool = True) -> Path:
    """An MTFL copy at ``out`` whose *training* images keep the centred ``fraction`` of each side.

    MTFL's training faces are loose crops (LFW: inter-ocular distance ~17 % of the width, web images ~22 %) while
    the AFLW test faces are tight (~30 %); a fixed centre crop (no landmark is looked at per image) matches the
    framing. The training landmarks are shifted into the crop; the test split is linked unchanged. Images already
    written are kept (an interrupted run resumes); each list file is written last, atomically.
    """
    source, out = MTFL(root, "train", load_images=False), Path(out)
    lines = []
    for sample in tqdm(source, total=len(source), desc="crop MTFL", unit="image", disable=not progress):
        relative = Path(sample["path"]).relative_to(source.root)
        left, top, right, bottom = center_crop_box(*sample["shape"], fraction)
        target = out / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.tmp{os.getpid()}")
            with Image.open(sample["path"]) as image:
                image.convert("RGB").crop((left, top, right, bottom)).save(partial, format="JPEG", quality=quality)
            os.replace(partial, target)
        lines.append(_mtfl_line(relative, sample["points"] - (left, top), sample["attributes"]))
    _link_test_split(source.root, out)
    write_text_atomic(out / MTFL.FILES["train"], "\n".join(lines) + "\n")
    return out


def _mtfl_line(relative: Path, points: np.ndarray, attributes: dict) -> str:
    """One line of an MTFL list file: path, all five x, all five y, then the attributes (the order MTFL reads)."""
    numbers = [f"{v:.6f}" for v in (*points[:, 0], *points[:, 1])]
    return " ".join([relative.as_posix(), *numbers, *(str(attributes[name]) for name in MTFL.ATTRIBUTES)])


def _link_test_split(root: Path, out: Path) -> None:
    test = MTFL(root, "test", load_images=False)
    for folder in sorted({Path(r["path"]).parent for r in test._records}):
        link = out / folder.relative_to(test.root)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder.resolve(), target_is_directory=True)
    write_text_atomic(out / MTFL.FILES["test"], test.list_file.read_text())


@register_image_dataset("cub-unlabeled")
class CUBUnlabeled(ImageDataset):
    """The CUB-200-2011 100-species subset with species labels only (no part annotations).

    Files: ``images.txt`` (``id, relative path`` under ``images/``), ``image_class_labels.txt`` (``id, class id``),
    ``classes.txt`` (``class id, name``), optional ``train_test_split.txt`` (``id, is_train``) used by
    ``split="train"``/``"test"``; ``None``/``"all"`` keeps every image. ``points`` is (0, 2).
    """

    name = "cub-unlabeled"
    SPLITS = {None: "all", "all": "all", "train": "train", "trn": "train", "test": "test"}

    def __init__(self, root, split=None, *, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.split = check_split(split, self.SPLITS, "CUB")
        paths = read_id_table(require_file(self.root / "images.txt", "CUB"))
        labels = read_id_table(require_file(self.root / "image_class_labels.txt", "CUB"))
        class_names = read_id_table(require_file(self.root / "classes.txt", "CUB"))
        keep = self._split_ids(paths)
        for image_id, relative in paths.items():
            if image_id not in keep:
                continue
            if image_id not in labels:
                raise DatasetError(f"CUB: image id {image_id} has no entry in {self.root / 'image_class_labels.txt'}")
            label = int(labels[image_id])
            category = class_names.get(str(label), str(label))
            self._records.append(_record(self.root / "images" / relative, label=label, category=category))
        check_files_exist([r["path"] for r in self._records], "CUB", self.root / "images.txt")

    def _split_ids(self, paths: dict[str, str]) -> set[str]:
        if self.split == "all":
            return set(paths)
        is_train = read_id_table(require_file(self.root / "train_test_split.txt", "CUB"))
        wanted = "1" if self.split == "train" else "0"
        return {image_id for image_id, flag in is_train.items() if flag == wanted}

    def describe(self) -> dict:
        info = super().describe()
        info.update(split=self.split, annotations="species labels only")
        return info


def read_id_table(path: Path) -> dict[str, str]:
    """``id, value`` (comma and/or space separated) lines -> {id: value}, in file order."""
    table: dict[str, str] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = re.split(r"\s*,\s*|\s+", line.strip(), maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{path} line {line_number}: expected 'id, value'")
        table[parts[0]] = parts[1].strip()
    return table
