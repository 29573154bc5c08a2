"""The on-disk cache of what training computes once from frozen networks (feature banks, resized image collections).

A cached entry is a dict of tensors and plain values, found by a key hashed from a description of everything that
made it (backbone, image list, views, warp, ...): change any of those and a new entry is built, never a stale one
reused. Entries live under ``$CORRMARK_CACHE`` (default ``~/.cache/corrmark``), one folder per kind
(``sfnet_features``, ``scorrsan_features``, ``jlad_features``, ``c3_images``, ``weights``), so one kind can be cleared
alone. Writes are atomic (temporary file + rename).

``FrozenBank`` gives a bank class its stored form from a list of fields, so the three feature banks (SFNet, SCorrSAN,
JLAD) differ only in what they hold.

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
        from .train.checkpoint import save_checkpoint  # the atomic writer every checkpoint uses

        save_checkpoint(path, state)
    return state


class FrozenBank:
    """Base of the feature banks: ``FIELDS`` names the constructor arguments in order, which are also the keys of the
    stored dict; ``JSON_FIELDS`` (lists, dicts) are stored as JSON text so the dict loads with ``weights_only=True``."""

    FIELDS: tuple[str, ...] = ()
    JSON_FIELDS: frozenset[str] = frozenset()

    def state(self) -> dict:
        return {name: json.dumps(getattr(self, name)) if name in self.JSON_FIELDS else getattr(self, name)
                for name in self.FIELDS}

    @classmethod
    def from_state(cls, state: dict):
        return cls(*(json.loads(state[name]) if name in cls.JSON_FIELDS else state[name] for name in cls.FIELDS))

    @classmethod
    def load_or_build(cls, kind: str, key: str, build: Callable[[], FrozenBank], cache: bool = True):
        """The cached bank of ``key``, or ``build()`` stored under it."""
        return cls.from_state(load_or_build(kind, key, lambda: build().state(), cache))


class DescriptorCache:
    """A least-recently-used cache of what a model computed from an image, keyed by the image's content and shape.

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

    def get_or_compute(self, image, compute: Callable[[], object]):
        """The entry of ``image``, or ``compute()`` stored as it."""
        key = self.key_of(image)
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
