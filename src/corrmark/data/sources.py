"""Training images named by a config's ``data.sources``: one parser and collector for every trainer.

Each source is a mapping::

    {dataset: mtfl, root: ../shared/data/mtfl, split: train, limit: 1000, group: face}

- ``dataset``: an image collection of ``corrmark.data.IMAGE_DATASETS`` (``image-folder``, ``mtfl``,
  ``cub-unlabeled``) or the images of a keypoint dataset: ``stanfordextra`` (every dog in annotation order, with its
  silhouette; ``split`` is not used) or ``pf-willow`` (the images of the split's pairs sorted by path, default split
  ``train``, category = subclass).
- ``root``: its folder (``$VARS`` expanded; a relative root is relative to the working directory).
- ``split``: the loader's split (optional).
- ``limit``: keep a random subset of that many images, in dataset order (:func:`seeded_subset`).
- ``group`` (only where ``SourceRules.grouped``): pairs are drawn inside a group; default the dataset name;
  ``"@category"`` = ``"<dataset>/<category>"`` with each image's own category (its folder in an image-folder).
- the trainer's own keys (``SourceRules.options``, e.g. SFNet's ``masks``), with their defaults.

Each trainer states what its sources may hold in a ``SourceRules`` and calls :func:`collect_source_images`; an unknown
or missing key fails at once, before any dataset is opened. The ``limit`` subset of source ``n`` is seeded by
``[data_seed, n, *subset_salt]``. Each trainer keeps its own salt: feature banks and image caches are keyed by the
chosen images, so a shared salt would change every existing training set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import check_known_keys
from ..errors import CorrmarkError

BASE_KEYS = ("dataset", "root", "split", "limit")
REQUIRED_KEYS = ("dataset", "root")
CATEGORY_GROUP = "@category"


@dataclass(frozen=True)
class SourceRules:
    """What one trainer's ``data.sources`` may hold.

    ``trainer`` names the trainer in messages; ``subset_salt`` ends the seed of every ``limit`` subset;
    ``grouped``: a source may name its ``group``; ``options``: the trainer's further keys and their defaults;
    ``min_images``: fewer collected images is an error.
    """

    trainer: str
    subset_salt: tuple[int, ...] = ()
    grouped: bool = False
    options: Mapping[str, object] = field(default_factory=dict)
    min_images: int = 1

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key a source may hold."""
        return BASE_KEYS + (("group",) if self.grouped else ()) + tuple(self.options)


@dataclass(frozen=True)
class SourceImage:
    """One collected training image.

    ``shape`` is its (H, W); ``options`` its source's values of the trainer's options; ``source`` the number of its
    source; ``dataset`` and ``index`` where it came from (SFNet reads a StanfordExtra silhouette as
    ``dataset.mask(index, shape)``; ``dataset`` is None for PF-WILLOW).
    """

    path: str
    group: str
    shape: tuple[int, int]
    options: Mapping[str, object]
    source: int
    index: int
    dataset: object = field(default=None, repr=False, compare=False)


def seeded_subset(count: int, limit, seed_words: Sequence[int]) -> list[int]:
    """Sorted indices of ``limit`` of ``count`` items drawn without replacement by ``default_rng(seed_words)``;
    every index when ``limit`` is None or not below ``count``."""
    if limit is None or int(limit) >= count:
        return list(range(count))
    chosen = np.random.default_rng(list(seed_words)).choice(count, int(limit), replace=False)
    return sorted(int(index) for index in chosen)


def collect_source_images(sources, data_seed: int, rules: SourceRules) -> list[SourceImage]:
    """The images of every source, source after source (module docstring). Raises ``CorrmarkError`` for a bad
    source (before opening any dataset) or fewer than ``rules.min_images`` images."""
    if not isinstance(sources, Sequence) or isinstance(sources, (str, bytes)):
        raise CorrmarkError(f"{rules.trainer} data.sources must be a list of sources, got {sources!r}")
    parsed = [_checked_source(source, number, rules) for number, source in enumerate(sources)]
    images = []
    for number, source in enumerate(parsed):
        images.extend(_source_images(source, number, int(data_seed), rules))
    if len(images) < rules.min_images:
        raise CorrmarkError(f"{rules.trainer} needs at least {rules.min_images} training image(s); "
                            f"the data sources hold {len(images)}")
    return images


def _checked_source(source, number: int, rules: SourceRules) -> Mapping:
    if not isinstance(source, Mapping):
        raise CorrmarkError(f"{rules.trainer} data source {number}: expected a mapping such as "
                            f"{{dataset: mtfl, root: ...}}, got {source!r}")
    check_known_keys(source, rules.keys, f"{rules.trainer} data source")
    missing = [key for key in REQUIRED_KEYS if key not in source]
    if missing:
        raise CorrmarkError(f"{rules.trainer} data source {number} needs {' and '.join(missing)}")
    return source


def _source_images(source: Mapping, number: int, data_seed: int, rules: SourceRules) -> list[SourceImage]:
    name = str(source["dataset"])
    dataset, listed = _list_images(name, os.path.expandvars(str(source["root"])), source.get("split"))
    group = str(source.get("group", name))
    options = {key: source.get(key, default) for key, default in rules.options.items()}
    images = []
    for index in seeded_subset(len(listed), source.get("limit"), (data_seed, number, *rules.subset_salt)):
        path, category, shape = listed[index]
        image_group = f"{name}/{category}" if group == CATEGORY_GROUP else group
        images.append(SourceImage(path, image_group, shape, options, number, index, dataset))
    return images


def _list_images(name: str, root: str, split) -> tuple[object, list[tuple[str, str, tuple[int, int]]]]:
    """``(dataset, [(path, category, (H, W))])`` of one source, in the dataset's order."""
    kind = name.strip().lower()
    if kind == "stanfordextra":
        from .stanfordextra import StanfordExtra

        dogs = StanfordExtra(root, load_images=False)
        return dogs, [(str(image["path"]), "", tuple(image["shape"])) for image in dogs.images]
    if kind == "pf-willow":
        from .keypoint_pairs import pfwillow_images

        images, _, _ = pfwillow_images(root, split or "train")
        return None, [(item.path, item.group, tuple(item.shape)) for item in images]
    from . import open_image_dataset

    dataset = open_image_dataset(name, root, split, load_images=False)
    samples = (dataset[index] for index in range(len(dataset)))
    return dataset, [(str(sample["path"]), sample.get("category", ""), tuple(sample["shape"])) for sample in samples]
