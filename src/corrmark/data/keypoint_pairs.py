"""Keypoint-labelled images as cached frozen features, and deterministic pair batches over them (SCorrSAN training).

A keypoint bank (a ``corrmark.cache.FeatureBank``) holds, for every image and view, the frozen descriptor of the
square-resized image (``features`` ``(N * V, C, h, w)`` float16) and its K keypoints in square-input pixels
(``points`` ``(N * V, K, 2)``, NaN = not annotated), with ``shapes``, ``paths``, ``size`` and ``stride``. View 0 is
the plain resize; view 1 (``views: 2``) the horizontal mirror, for datasets whose keypoint order has a known left/right
permutation (MTFL faces: ``[1, 0, 2, 4, 3]`` keeps "left eye" = the image-left eye). Features are computed once and
cached under ``$CORRMARK_CACHE/scorrsan_features`` (default ``~/.cache/corrmark``), keyed by the image list, points,
views and descriptor.

Protocol helpers:

- ``mtfl_images(root, split, limit, seed, exclude)``: MTFL faces with their 5 landmarks, one group.
- ``face_test_pairs(count, images, seed)``: the seeded AFLW test pair list (``count`` distinct images, pair ``i`` =
  (image ``i``, image ``i + 1 mod count``), so every image is once a source and once a target).
- ``pfwillow_images(root, split)``: the images of a PF-WILLOW split with their pair list (the 200 ordered pairs).
- ``stanfordextra_images(root)``: every dog with its 24 joints, ``group`` = breed.
- ``stanfordextra_fold(root, held_out_breed)``: one leave-one-breed-out fold: training pairs over the other breeds
  (within and across breeds), test pairs within the held-out breed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..backbones.descriptors import DescriptorExtractor, parse_backbone_spec
from ..cache import FeatureBank, cache_key
from ..errors import CorrmarkError, UnknownNameError
from ..io import read_image
from ..preprocess import Preprocess
from .images import MTFL
from .pf_willow import PFWillow
from .sources import seeded_subset
from .stanfordextra import StanfordExtra

BANK_VERSION = 1
FACE_FLIP = [1, 0, 2, 4, 3]  # MTFL: left eye, right eye, nose, left mouth, right mouth (image-left side)


@dataclass
class KeypointImage:
    path: str
    points: np.ndarray  # (K, 2) original pixels, NaN rows = not annotated
    shape: tuple[int, int]  # (H, W)
    group: str = "all"
    flip: list | None = field(default=None)  # keypoint permutation applied after mirroring (None: no mirror view)


CACHE_KIND = "scorrsan_features"  # folder under $CORRMARK_CACHE (corrmark.cache)


def bank_key(items: list[KeypointImage], descriptor: dict, views: int) -> str:
    return cache_key({"version": BANK_VERSION, "descriptor": descriptor, "views": views,
                      "images": [(item.path, np.round(np.nan_to_num(item.points, nan=-1e6), 3).tolist(), item.group,
                                  item.flip) for item in items]})


def build_keypoint_bank(items: list[KeypointImage], backbone: str, layers, image_size: int, views: int = 1,
                        device="cpu", weights_files=None, cache: bool = True, progress: bool = True,
                        chunk: int = 8) -> FeatureBank:
    """Describe every image (and its mirror when ``views == 2``) with the frozen descriptor, or load the cache."""
    if views not in (1, 2):
        raise CorrmarkError(f"a keypoint bank has 1 or 2 views (plain, mirrored), got {views}")
    if not items:
        raise CorrmarkError("the keypoint bank has no images")
    descriptor = {"backbone": backbone, "layers": layers, "image_size": int(image_size)}
    key = bank_key(items, descriptor, views)
    return FeatureBank.load_or_build(
        CACHE_KIND, key, lambda: _describe_images(items, descriptor, views, key, device, weights_files, progress, chunk),
        cache)


def _describe_images(items: list[KeypointImage], descriptor: dict, views: int, key: str, device, weights_files,
                     progress: bool, chunk: int) -> FeatureBank:
    backbone, layers, image_size = descriptor["backbone"], descriptor["layers"], descriptor["image_size"]
    extractor = DescriptorExtractor(parse_backbone_spec(backbone, layers), device=device,
                                    weights_files=weights_files).eval()
    preprocess = Preprocess(image_size, extractor.size_multiple)
    size = preprocess.square_size
    started = time.perf_counter()
    features = [None] * (len(items) * views)
    points = np.full((len(items) * views, max(len(item.points) for item in items), 2), np.nan, dtype=np.float32)
    for start in tqdm(range(0, len(items), chunk), desc="scorrsan features", disable=not progress, unit="batch"):
        batch = items[start:start + chunk]
        tensors = torch.cat([preprocess.to_input(read_image(item.path)) for item in batch])
        for view in range(views):
            view_tensor = tensors if view == 0 else torch.flip(tensors, dims=[3])
            with torch.no_grad():
                described = extractor(view_tensor.to(device)).cpu().to(torch.float16)
            for offset, item in enumerate(batch):
                row = (start + offset) * views + view
                features[row] = described[offset]
                item_points = preprocess.to_working(torch.as_tensor(item.points, dtype=torch.float32), item.shape)
                if view == 1:
                    if item.flip is None:
                        raise CorrmarkError(f"{item.path}: a mirrored view needs a keypoint flip permutation")
                    item_points = item_points[item.flip]
                    item_points[:, 0] = size - 1 - item_points[:, 0]
                points[row, :len(item_points)] = item_points.numpy()
    groups = sorted({item.group for item in items})
    return FeatureBank(features=torch.stack(features), points=torch.from_numpy(points),
                       shapes=torch.tensor([item.shape for item in items], dtype=torch.int64),
                       groups=torch.tensor([groups.index(item.group) for item in items], dtype=torch.int64),
                       views=views, paths=[item.path for item in items], size=int(size),
                       stride=float(extractor.stride),
                       meta={"key": key, "groups": groups, "images": len(items), "descriptor": descriptor,
                             "seconds": round(time.perf_counter() - started, 1)})


# --- batches --------------------------------------------------------------------------------------------------------


def _pair_batch(bank: FeatureBank, source_rows, target_rows, progress: float) -> dict:
    source_rows, target_rows = torch.as_tensor(source_rows), torch.as_tensor(target_rows)
    source_points, target_points = bank.points[source_rows], bank.points[target_rows]
    valid = torch.isfinite(source_points).all(-1) & torch.isfinite(target_points).all(-1)
    return {"source": bank.features[source_rows].float(), "target": bank.features[target_rows].float(),
            "source_points": source_points, "target_points": target_points, "valid": valid,
            "epoch": float(progress)}


class RandomPairs:
    """``steps_per_epoch`` batches of random pairs of distinct images of the same group, random views (BatchSource).

    ``images`` restricts sampling to those image indices (e.g. the training part of a bank).
    """

    def __init__(self, bank: FeatureBank, batch_size: int = 8, steps_per_epoch: int = 100, images=None):
        self.bank, self.batch_size, self.steps = bank, int(batch_size), int(steps_per_epoch)
        chosen = np.arange(bank.images) if images is None else np.asarray(sorted(images))
        groups = bank.groups.numpy()[chosen]
        self.members = {int(g): chosen[groups == g] for g in np.unique(groups)}
        self.usable = [g for g, members in self.members.items() if len(members) >= 2]
        if not self.usable:
            raise CorrmarkError("random pairs need a group with at least two images")

    def __len__(self) -> int:
        return self.steps

    def batches(self, seed: int, epoch: int):
        rng = np.random.default_rng([int(seed), int(epoch), 11])
        for step in range(self.steps):
            sources, targets = [], []
            for _ in range(self.batch_size):
                members = self.members[self.usable[int(rng.integers(len(self.usable)))]]
                first, second = rng.choice(len(members), 2, replace=False)
                views = rng.integers(self.bank.views, size=2)
                sources.append(int(members[first]) * self.bank.views + int(views[0]))
                targets.append(int(members[second]) * self.bank.views + int(views[1]))
            yield _pair_batch(self.bank, sources, targets, epoch + step / self.steps)


class FixedPairs:
    """Every pair of a fixed list once per epoch, shuffled, in batches (BatchSource). With ``mirror_pairs`` (a bank
    with the mirrored view) each pair is shown, at random, plain or with *both* images mirrored: mirroring both keeps
    every keypoint's partner, whatever the keypoints' left/right naming, so the pairs stay exact."""

    def __init__(self, bank: FeatureBank, pairs, batch_size: int = 8, mirror_pairs: bool = False):
        self.bank, self.pairs, self.batch_size = bank, [tuple(map(int, p)) for p in pairs], int(batch_size)
        if mirror_pairs and bank.views != 2:
            raise CorrmarkError("mirrored pairs need a keypoint bank with the mirrored view (views: 2)")
        self.mirror_pairs = bool(mirror_pairs)
        if not self.pairs:
            raise CorrmarkError("the fixed pair list is empty")

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def batches(self, seed: int, epoch: int):
        rng = np.random.default_rng([int(seed), int(epoch), 13])
        order = rng.permutation(len(self.pairs))
        for step, start in enumerate(range(0, len(order), self.batch_size)):
            chosen = [self.pairs[i] for i in order[start:start + self.batch_size]]
            views = rng.integers(2, size=len(chosen)) if self.mirror_pairs else np.zeros(len(chosen), int)
            sources = [s * self.bank.views + int(v) for (s, _), v in zip(chosen, views)]
            targets = [t * self.bank.views + int(v) for (_, t), v in zip(chosen, views)]
            yield _pair_batch(self.bank, sources, targets, epoch + step / len(self))


# --- protocol image lists -------------------------------------------------------------------------------------------


def mtfl_images(root, split: str, limit: int | None = None, seed: int = 0, exclude=()) -> list[KeypointImage]:
    """MTFL faces of ``split`` (``limit`` of them, chosen with ``seed``, skipping paths in ``exclude``), sorted by
    their index in the list file."""
    dataset = MTFL(root, split, load_images=False)
    excluded = {str(path) for path in exclude}
    indices = [i for i in range(len(dataset)) if str(dataset[i]["path"]) not in excluded]
    indices = [indices[i] for i in seeded_subset(len(indices), limit, (int(seed), 3))]
    items = []
    for index in indices:
        sample = dataset[index]
        items.append(KeypointImage(str(sample["path"]), np.asarray(sample["points"], dtype=np.float64),
                                   tuple(sample["shape"]), "face", FACE_FLIP))
    return items


def face_test_pairs(count: int, images: int, seed: int = 0) -> tuple[list[int], list[tuple[int, int]]]:
    """``count`` distinct image indices out of ``images`` (sorted) and the pairs ``(i, i + 1 mod count)`` over them.

    Returns ``(image_indices, pairs)``; pairs index into ``image_indices`` as (source, target).
    """
    if count < 2 or count > images:
        raise CorrmarkError(f"face test pairs need 2 <= count <= {images}, got {count}")
    chosen = np.random.default_rng([int(seed), 5]).choice(images, int(count), replace=False)
    order = np.random.default_rng([int(seed), 6]).permutation(count)
    image_indices = sorted(int(i) for i in chosen)
    pairs = [(int(order[i]), int(order[(i + 1) % count])) for i in range(count)]
    return image_indices, pairs


def pfwillow_images(root, split: str) -> tuple[list[KeypointImage], list[tuple[int, int]], list[str]]:
    """The images of a PF-WILLOW split (sorted by path), the split's ordered pairs as image indices, and pair ids."""
    dataset = PFWillow(root, split, load_images=False)
    by_path: dict[str, tuple[np.ndarray, str, tuple[int, int]]] = {}
    records = []
    for index in range(len(dataset)):
        sample = dataset[index]
        for side in ("source", "target"):
            path = str(sample[f"{side}_path"])
            points = np.asarray(sample[f"{side}_points"], dtype=np.float64)
            if path in by_path and not np.allclose(by_path[path][0], points, equal_nan=True):
                raise CorrmarkError(f"PF-WILLOW: {path} has different keypoints in different pairs")
            by_path[path] = (points, sample["category"], tuple(sample[f"{side}_shape"]))
        records.append((str(sample["source_path"]), str(sample["target_path"]), sample["pair_id"]))
    paths = sorted(by_path)
    items = [KeypointImage(path, by_path[path][0], by_path[path][2], by_path[path][1]) for path in paths]
    pairs = [(paths.index(s), paths.index(t)) for s, t, _ in records]
    return items, pairs, [pair_id for _, _, pair_id in records]


def stanfordextra_images(root) -> list[KeypointImage]:
    """Every StanfordExtra image with its 24 joints (NaN = invisible); ``group`` = breed."""
    dataset = StanfordExtra(root, load_images=False)
    return [KeypointImage(str(image["path"]), np.asarray(image["points"], dtype=np.float64), tuple(image["shape"]),
                          image["breed"]) for image in dataset.images]


def stanfordextra_breeds(items: list[KeypointImage]) -> list[str]:
    """The breeds of ``items`` sorted case-insensitively: fold ``i`` of leave-one-breed-out holds out breed ``i``."""
    return sorted({item.group for item in items}, key=str.lower)


def resolve_breed(breeds: list[str], held_out_breed) -> str:
    """``held_out_breed`` as a breed name: a name (case-insensitive) or an index into ``breeds``."""
    if held_out_breed is None:
        raise CorrmarkError(f"leave-one-breed-out needs held_out_breed: a name or an index of {', '.join(breeds)}")
    if isinstance(held_out_breed, (int, np.integer)) and not isinstance(held_out_breed, bool):
        if not 0 <= int(held_out_breed) < len(breeds):
            raise CorrmarkError(f"held_out_breed index {held_out_breed} is out of range: {len(breeds)} breeds")
        return breeds[int(held_out_breed)]
    by_name = {breed.lower(): breed for breed in breeds}
    name = str(held_out_breed).lower()
    if name not in by_name:
        raise UnknownNameError(f"unknown held_out_breed {held_out_breed!r}; breeds: {', '.join(breeds)}")
    return by_name[name]


def ordered_pairs(count: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct indices below ``count``."""
    return [(first, second) for first in range(count) for second in range(count) if first != second]


@dataclass
class BreedFold:
    """One leave-one-breed-out fold. Pairs index into their own item list as (source, target)."""

    held_out_breed: str
    train_items: list[KeypointImage]
    train_pairs: list[tuple[int, int]]
    test_items: list[KeypointImage]
    test_pairs: list[tuple[int, int]]


def stanfordextra_fold(root, held_out_breed) -> BreedFold:
    """Train on every ordered pair of dogs of the other breeds (within and across breeds), test on every ordered pair
    within ``held_out_breed`` (a name or an index of :func:`stanfordextra_breeds`). Items keep the annotation order."""
    items = stanfordextra_images(root)
    breed = resolve_breed(stanfordextra_breeds(items), held_out_breed)
    train_items = [item for item in items if item.group != breed]
    test_items = [item for item in items if item.group == breed]
    if len(test_items) < 2:
        raise CorrmarkError(f"held-out breed {breed} has {len(test_items)} image(s); a test pair needs two")
    return BreedFold(breed, train_items, ordered_pairs(len(train_items)), test_items, ordered_pairs(len(test_items)))


class FacePairs:
    """The seeded AFLW (MTFL ``testing.txt``) pair list as pair samples (``PairSample`` keys, category ``"face"``).

    ``count`` distinct faces chosen with ``seed``; pair ``i`` = (face ``order[i]``, face ``order[i + 1 mod count]``),
    see :func:`face_test_pairs`. ``items`` are the chosen faces (sorted by their line in ``testing.txt``).
    """

    name = "aflw-pairs"

    def __init__(self, root, count: int = 1000, seed: int = 0, split: str = "test", load_images: bool = True):
        everything = mtfl_images(root, split)
        indices, self.pairs = face_test_pairs(count, len(everything), seed)
        self.items = [everything[i] for i in indices]
        self.count, self.seed, self.split, self.load_images = int(count), int(seed), split, load_images

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        source, target = (self.items[i] for i in self.pairs[index])
        sample = {"pair_id": f"{Path(source.path).stem}->{Path(target.path).stem}", "category": "face",
                  "source_path": source.path, "target_path": target.path,
                  "source_shape": source.shape, "target_shape": target.shape,
                  "source_points": source.points.copy(), "target_points": target.points.copy(),
                  "valid": np.isfinite(source.points).all(1) & np.isfinite(target.points).all(1),
                  "source_bbox": None, "target_bbox": None, "source_mask": None, "target_mask": None, "flags": {}}
        if self.load_images:
            sample["source_image"], sample["target_image"] = read_image(source.path), read_image(target.path)
        return sample

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "pairs": len(self), "faces": self.count, "seed": self.seed,
                "pairing": "count distinct seeded faces; pair i = (order[i], order[i+1 mod count])"}
