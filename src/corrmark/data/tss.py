"""TSS (Taniai et al., "Joint recovery of dense correspondence and cosegmentation", CVPR 2016): 400 pairs with dense
ground-truth flow and foreground masks, in three groups (FG3DCar, JODS, PASCAL).

Layout: ``root/<group>/<pair folder>/`` (or pair folders directly under ``root``), each holding ``image1.png,
image2.png, flow1.flo, flow2.flo, mask1.png, mask2.png`` and optionally ``flip_gt.txt`` (1 = the two objects face
opposite directions; recorded in ``flags['flip']``, nothing is mirrored).

Flow semantics (Taniai's evaluation code): ``flowK.flo`` is defined on the grid of imageK and holds the displacement
to the other image, ``(x_other, y_other) = (x, y) + flowK[y, x]``; entries above 1e9 (unknown) are NaN here.

Samples: with ``both_directions=True`` (default, as in the TSS evaluation, which scores 1->2 and 2->1) each folder
gives two samples, source=image1/target=image2 and the reverse; otherwise only the first. Extra keys:

- ``flow_target_to_source``: float32 (H_t, W_t, 2) displacements on the target grid pointing into the source
  (``corrmark.data.flo.flow_to_mapping`` turns it into the "target-to-source mapping" of docs/CONVENTIONS.md);
- ``flow_source_to_target``: the same from the source grid into the target.
Masks are read as ``mask > 0``; the PCK/flow threshold in the TSS benchmark is alpha * max(H, W) of the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..registry import register_pair_dataset
from .base import PairDataset, check_files_exist, pair_record, require_dir
from .flo import read_flo

PAIR_FILES = ("image1.png", "image2.png", "flow1.flo", "flow2.flo", "mask1.png", "mask2.png")


@register_pair_dataset("tss")
class TSS(PairDataset):
    """TSS pairs; ``groups`` restricts to some group folders (e.g. ``("FG3DCar",)``)."""

    name = "tss"

    def __init__(self, root, split=None, *, groups=None, both_directions: bool = True, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        require_dir(self.root, "TSS")
        self.both_directions = both_directions
        folders = find_pair_folders(self.root, groups)
        if not folders:
            raise DatasetError(f"TSS: no pair folder (a folder holding image1.png) under {self.root}")
        check_files_exist([folder / name for folder in folders for name in PAIR_FILES], "TSS", self.root)
        self._folders: list[Path] = []
        for folder in folders:
            self._add_folder(folder)

    def _add_folder(self, folder: Path) -> None:
        group = folder.parent.name if folder.parent != self.root else self.root.name
        flags = {"flip": read_flip(folder), "folder": str(folder)}
        directions = [(1, 2), (2, 1)] if self.both_directions else [(1, 2)]
        for source, target in directions:
            self._folders.append(folder)
            self._records.append(
                pair_record(
                    pair_id=f"{group}/{folder.name}:{source}->{target}",
                    category=group,
                    source_path=folder / f"image{source}.png",
                    target_path=folder / f"image{target}.png",
                    flags={**flags, "source_index": source, "target_index": target},
                )
            )

    def _masks(self, index: int, sample: dict):
        folder, flags = self._folders[index], sample["flags"]
        return (
            read_mask(folder / f"mask{flags['source_index']}.png", sample["source_shape"]),
            read_mask(folder / f"mask{flags['target_index']}.png", sample["target_shape"]),
        )

    def _extras(self, index: int, sample: dict) -> dict:
        folder, flags = self._folders[index], sample["flags"]
        target_flow = read_flo(folder / f"flow{flags['target_index']}.flo")
        source_flow = read_flo(folder / f"flow{flags['source_index']}.flo")
        for side, flow in (("target", target_flow), ("source", source_flow)):
            shape = tuple(sample[f"{side}_shape"])
            if flow.shape[:2] != shape:
                raise DatasetError(f"TSS: {side} flow in {folder} is {flow.shape[:2]}, its image is {tuple(shape)}")
        return {"flow_target_to_source": target_flow, "flow_source_to_target": source_flow}

    def describe(self) -> dict:
        info = super().describe()
        info.update(
            folders=len(set(map(str, self._folders))),
            both_directions=self.both_directions,
            flow="flowK.flo on imageK's grid, displacement to the other image; unknown -> NaN",
        )
        return info


def find_pair_folders(root: Path, groups=None) -> list[Path]:
    """Pair folders (holding ``image1.png``) directly under ``root`` or one level down, sorted."""
    if (root / "image1.png").is_file():
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if (child / "image1.png").is_file():
            found.append(child)
        elif groups is None or child.name in groups:
            found.extend(sorted(p for p in child.iterdir() if p.is_dir() and (p / "image1.png").is_file()))
    if groups is not None:
        found = [f for f in found if f.parent.name in groups]
    return found


def read_flip(folder: Path) -> bool:
    """``flip_gt.txt`` holds 0 or 1; a missing file means 0."""
    path = folder / "flip_gt.txt"
    if not path.is_file():
        return False
    try:
        return bool(int(path.read_text().split()[0]))
    except (ValueError, IndexError):
        raise DatasetError(f"TSS: cannot parse {path}: expected 0 or 1") from None


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask image as bool (H, W) (nonzero = foreground), checked against the image shape."""
    try:
        with Image.open(path) as handle:
            mask = np.asarray(handle.convert("L")) > 0
    except OSError as error:
        raise DatasetError(f"cannot read mask {path}: {error}") from None
    if mask.shape != tuple(shape):
        raise DatasetError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, its image is {shape[1]}x{shape[0]}")
    return mask
