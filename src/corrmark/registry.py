"""Registries: the names corrmark knows (matchers, landmark models, training methods, datasets, backbones).

Each name is registered by a decorator beside what it names, so adding a method touches only the method's own files:

    @register_matcher("sfnet")                # models/sfnet.py, on the checkpoint loader
    def load_sfnet(checkpoint, device="cpu", ...): ...

    @register_trainer("sfnet")                # train/sfnet.py, on the experiment builder
    def build_experiment(config, device, progress=True): ...

There is no central list: on its first lookup a registry imports every module of its package (``corrmark.models``,
``corrmark.train``, ``corrmark.data``, ``corrmark.backbones``), which runs their decorators. ``import corrmark``
stays light because nothing is discovered until a name is looked up or listed.

A registry behaves like a read-only mapping of name -> the registered object (``in``, iteration in sorted order,
``len``, ``registry[name]``); an unknown name raises ``UnknownNameError``
("unknown <kind> 'x'; available: a, b"). This module is part of the foundation layer: it imports only the standard
library and ``corrmark.errors`` (the layers are listed in ``corrmark/__init__.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import CorrmarkError, UnknownNameError

Registered = TypeVar("Registered")
TRAINED_HINT = "final.pt from corrmark train"


@dataclass(frozen=True)
class Entry:
    """One registered name: the object (loader, builder or class) and what its decorator said about it."""

    name: str
    target: Any
    info: dict = field(default_factory=dict)


class Registry:
    """Name -> registered object for one kind of thing; see the module docstring.

    ``package``: the package whose modules are imported on the first lookup (None: nothing to discover).
    ``normalise``: applied to a name before it is stored or looked up (e.g. ``str.lower`` for dataset names).
    """

    def __init__(self, kind: str, package: str | None = None, normalise: Callable[[str], str] | None = None):
        self.kind = kind
        self.package = package
        self._normalise = normalise or str
        self._entries: dict[str, Entry] = {}
        self._discovered = package is None
        self._discovering = False

    def register(self, name: str, **info) -> Callable[[Registered], Registered]:
        """A decorator registering the decorated object under ``name`` (with ``info`` kept in its entry)."""

        def decorator(target: Registered) -> Registered:
            self.add(name, target, **info)
            return target

        return decorator

    def add(self, name: str, target, replace: bool = False, **info) -> None:
        """Register ``target`` under ``name``. Another object already there is an error unless ``replace``; the same
        definition again (its module imported or reloaded twice) is not."""
        key = self._normalise(name)
        existing = self._entries.get(key)
        if existing is not None and not replace and not _same_definition(existing.target, target):
            raise CorrmarkError(f"{self.kind} '{key}' is registered twice: by {_where(existing.target)} and by "
                                f"{_where(target)}")
        self._entries[key] = Entry(key, target, dict(info))

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; UnknownNameError listing the available names when there is none."""
        key = self._normalise(name)
        if key not in self._entries:
            self.discover()
        if key not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}")
        return self._entries[key]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[name] for name in self.names()]

    def get(self, name: str, default=None):
        return self[name] if name in self else default

    def __getitem__(self, name: str):
        return self.entry(name).target

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._normalise(name)
        if key not in self._entries:
            self.discover()
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def discover(self) -> None:
        """Import every module of the package once, so that every decorator in it has run."""
        if self._discovered or self._discovering:
            return
        self._discovering = True  # a module imported here may look a name up while it loads
        try:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
            self._discovered = True
        finally:
            self._discovering = False


def _same_definition(first, second) -> bool:
    if first is second:
        return True
    names = [(getattr(target, "__module__", None), getattr(target, "__qualname__", None)) for target in (first, second)]
    return names[0] == names[1] and None not in names[0]


def _where(target) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _dataset_key(name: str) -> str:
    return str(name).strip().lower()


MATCHERS = Registry("matcher", "corrmark.models")
LANDMARK_MODELS = Registry("landmark model", "corrmark.models")
TRAINERS = Registry("training method", "corrmark.train")
PAIR_DATASETS = Registry("pair dataset", "corrmark.data", normalise=_dataset_key)
IMAGE_DATASETS = Registry("image dataset", "corrmark.data", normalise=_dataset_key)
BACKBONES = Registry("backbone", "corrmark.backbones")


def register_matcher(name: str, trained: bool = True, checkpoint_hint: str = TRAINED_HINT):
    """Register a matcher loader ``load(checkpoint, device="cpu", **options) -> Matcher``; ``trained=False``: a
    matcher without weights, ``load(device="cpu", **options)``. ``checkpoint_hint`` names the file the error for a
    missing ``--checkpoint`` asks for."""
    return MATCHERS.register(name, trained=trained, checkpoint_hint=checkpoint_hint)


def register_landmark_model(name: str, checkpoint_hint: str = TRAINED_HINT):
    """Register a landmark model loader ``load(checkpoint, device="cpu", **options) -> LandmarkModel``."""
    return LANDMARK_MODELS.register(name, trained=True, checkpoint_hint=checkpoint_hint)


def register_trainer(name: str, source_rules=None):
    """Register the experiment builder ``build(config, device[, progress]) -> Experiment`` of ``method: name``;
    ``source_rules``: how it picks its training images from ``data.sources`` (``corrmark.data.sources.SourceRules``),
    for tools that need the same images (``corrmark eval-landmarks --fit-config``)."""
    return TRAINERS.register(name, source_rules=source_rules)


def register_pair_dataset(name: str):
    """Register a pair dataset class ``cls(root, split=None, **options)`` (``corrmark.data.open_dataset``)."""
    return PAIR_DATASETS.register(name)


def register_image_dataset(name: str):
    """Register an image dataset class ``cls(root, split=None, **options)`` (``open_image_dataset``)."""
    return IMAGE_DATASETS.register(name)


def register_backbone(name: str, facets: tuple[str, ...] = (), prefix: bool = False):
    """Register a backbone factory ``build(layers, weights)``. ``facets``: the names ``<name>@<facet>`` also
    accepted, built with ``build(layers, weights, facet=facet)``; ``prefix=True``: ``name`` is a prefix
    (``timm:``) and the rest of the name is passed first, ``build(rest, layers, weights)``."""
    return BACKBONES.register(name, facets=tuple(facets), prefix=prefix)
