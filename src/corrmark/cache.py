"""The on-disk cache of what training computes once from frozen networks (feature banks, resized image collections).

A cached entry is a dict of tensors and plain values, found by a key hashed from a description of everything that
made it (backbone, image list, views, warp, ...): change any of those and a new entry is built, never a stale one
reused. Entries live under ``$CORRMARK_CACHE`` (default ``~/.cache/corrmark``), one folder per kind
(``sfnet_features``, ``scorrsan_features``, ``jlad_features``, ``c3_images``, ``weights``), so one kind can be cleared
alone. Writes are atomic (temporary file + rename).

``FeatureBank`` is the one class of the feature banks (SFNet, SCorrSAN, JLAD): the frozen features of every image and
view plus the named tensors and values each method adds (masks, mappings, keypoints, ...), stored as one entry.

``DescriptorCache`` is the in-memory counterpart used at inference: the descriptors of recently seen images, kept by
the matchers because benchmarks and image folders reuse each image in many pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoints import save_checkpoint  # the atomic writer every checkpoint uses

CACHE_ENV = "CORRMARK_CACHE"


def cache_root() -> Path:
    """``$CORRMARK_CACHE``, else ``~/.cache/corrmark``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "corrmark")


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached entry, e.g. ``cache_dir("jlad_features")``."""
    return cache_root() / kind


def cache_key(description) -> str:
    """20 hex digits of the SHA-256 of the description as sorted JSON (non-JSON values by ``str``)."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_or_build(kind: str, key: str, build: Callable[[], dict], cache: bool = True) -> dict:
    """The stored dict ``<cache_dir(kind)>/<key>.pt``, or ``build()`` (then stored, unless ``cache=False``)."""
    path = cache_dir(kind) / f"{key}.pt"
    if cache and path.is_file():
        return torch.load(path, weights_only=True)
    state = build()
    if cache:
        save_checkpoint(path, state)
    return state


class FeatureBank:
    """Frozen features of ``N`` images in ``V`` views each, with named fields; row ``i * V + v`` of a per-view tensor
    belongs to image ``i``, view ``v``.

    Every bank has ``groups`` (N,) int64 (pairs are drawn inside a group), ``views`` V and ``meta`` (a JSON-able dict:
    the cache key, group names, timings). The other fields are the method's, read as attributes (``bank.masks``):

    - SFNet: ``levels`` (list of (N * V, C_l, h_l, w_l) float16), ``masks`` (N * V, 1, h, w) float16;
    - JLAD: ``features`` (N * V, C, h, w) float16, ``mappings`` (N * V, h, w, 2) (view grid -> view 0 grid),
      ``shapes`` (N, 2) original (H, W), ``paths``, ``size`` (square input side); with ``tune_block`` also
      ``tokens`` (N * V, 1 + h' * w', D) float16, the DINOv2 tokens entering the tuned block;
    - SCorrSAN: ``features``, ``points`` (N * V, K, 2) float32 square-input pixels (NaN = not annotated), ``shapes``,
      ``paths``, ``size``, ``stride``.

    The stored dict holds the fields under their names in the order given to the constructor (existing cache entries
    load unchanged), ``paths`` and ``meta`` as JSON text so that it loads with ``weights_only=True``.
    """

    REQUIRED = ("groups", "views", "meta")
    JSON_FIELDS = frozenset({"paths", "meta"})

    def __init__(self, **fields):
        missing = [name for name in self.REQUIRED if name not in fields]
        if missing:
            raise TypeError(f"a feature bank needs {', '.join(missing)}")
        fields["views"] = int(fields["views"])
        if "paths" in fields:
            fields["paths"] = list(fields["paths"])
        self.fields = fields

    def __getattr__(self, name: str):
        fields = self.__dict__.get("fields", {})  # absent while unpickling
        if name in fields:
            return fields[name]
        raise AttributeError(f"this feature bank has no field {name!r}; it has {', '.join(fields)}")

    @property
    def images(self) -> int:
        return len(self.fields["groups"])

    @property
    def channels(self) -> int:
        """Channels of ``features``."""
        return int(self.fields["features"].shape[1])

    def rows(self, images, views=None) -> torch.Tensor:
        """Rows of ``images`` in ``views`` (default view 0)."""
        images = torch.as_tensor(images, dtype=torch.int64)
        views = torch.zeros_like(images) if views is None else torch.as_tensor(views, dtype=torch.int64)
        return images * self.views + views

    def state(self) -> dict:
        return {name: json.dumps(value) if name in self.JSON_FIELDS else value for name, value in self.fields.items()}

    @classmethod
    def from_state(cls, state: dict) -> FeatureBank:
        return cls(**{name: json.loads(value) if name in cls.JSON_FIELDS else value for name, value in state.items()})

    @classmethod
    def load_or_build(cls, kind: str, key: str, build: Callable[[], FeatureBank], cache: bool = True) -> FeatureBank:
        """The cached bank of ``key``, or ``build()`` stored under it."""
        return cls.from_state(load_or_build(kind, key, lambda: build().state(), cache))


class DescriptorCache:
    """A least-recently-used cache of what a model computed from an image, keyed by the image's content and shape
    and by how it was computed (``variant``: the precision).

    ``capacity`` bounds memory: past it, the entry used longest ago goes. ``bench`` empties every matcher's
    ``_cache`` with :meth:`clear` so that timings include describing the images.
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._entries: OrderedDict = OrderedDict()

    @staticmethod
    def key_of(image) -> tuple:
        """``(content digest, shape)`` of an array image."""
        return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest(), image.shape

    def get_or_compute(self, image, compute: Callable[[], object], variant=None):
        """The entry of ``image`` computed the ``variant`` way, or ``compute()`` stored as it. ``variant`` is part
        of the key: the matchers pass their precision, so a bf16 descriptor is never served to an fp32 call."""
        key = (*self.key_of(image), variant)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = compute()
        self._entries[key] = value
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
