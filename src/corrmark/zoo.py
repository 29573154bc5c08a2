"""The model zoo: trained weights listed in ``zoo/zoo.yaml`` (see that file for the fields), loaded by name.

    >>> from corrmark.zoo import list_zoo, load_zoo_matcher
    >>> [entry.name for entry in list_zoo() if entry.available]  # doctest: +SKIP
    >>> matcher = load_zoo_matcher("scorrsan_pfwillow_st")  # doctest: +SKIP

The folder is ``$CORRMARK_ZOO`` when set, else ``zoo/`` of the source checkout. Weights files are weights-only exports
(``corrmark export``); an entry whose file is absent is listed with ``available = False``.
"""

from __future__ import annotations

import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .backbones._weights import DOWNLOAD_ENV, download_allowed
from .bundled import bundled_dir
from .cache import cache_dir
from .config import load_yaml
from .errors import CheckpointError, CorrmarkError, UnknownNameError
from .models import LANDMARK_MODELS, MATCHERS, load_landmark_model, load_matcher
from .train.export import file_sha256

INDEX_NAME = "zoo.yaml"
KINDS = ("matcher", "landmarks")
REQUIRED_FIELDS = ("name", "method", "kind", "file", "config", "data", "train_minutes", "metrics", "notes")


@dataclass
class ZooEntry:
    name: str
    method: str
    kind: str
    file: str
    config: str
    data: str
    train_minutes: float | None
    metrics: dict
    notes: str
    path: Path  # the weights file, resolved against the zoo folder
    results: list = field(default_factory=list)
    sha256: str | None = None
    category: str | None = None
    trained_on_examples: list = field(default_factory=list)
    options: dict = field(default_factory=dict)  # loader options the metrics were measured with (e.g. test_mutual)
    url: str | None = None  # where the weights can be downloaded (CORRMARK_ALLOW_DOWNLOAD=1; needs sha256)

    @property
    def available(self) -> bool:
        return self.path.is_file() or self.downloaded_path.is_file()

    @property
    def downloaded_path(self) -> Path:
        """Where a download of the weights is kept: ``$CORRMARK_CACHE/zoo/<file>``."""
        return cache_dir("zoo") / self.file


def trained_methods() -> tuple[str, ...]:
    """The methods a zoo entry can hold: every registered matcher with trained weights and every landmark model."""
    trained = {entry.name for entry in MATCHERS.entries() if entry.info["trained"]}
    return tuple(sorted(trained | set(LANDMARK_MODELS)))


def __getattr__(name: str):
    if name == "METHODS":  # read from the registries when asked, so a method registered later is allowed too
        return trained_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def zoo_dir() -> Path:
    """The zoo folder: $CORRMARK_ZOO, else ``zoo/`` of the source checkout, else the installed package's copy
    (``corrmark.bundled``); it must hold zoo.yaml."""
    return bundled_dir("zoo", INDEX_NAME, "CORRMARK_ZOO")


def list_zoo(folder: str | os.PathLike | None = None) -> list[ZooEntry]:
    """The entries of the zoo index (all of them; ``entry.available`` says whether the weights file is there)."""
    folder = Path(folder) if folder is not None else zoo_dir()
    index_path = folder / INDEX_NAME
    if not index_path.is_file():
        raise CorrmarkError(f"model zoo index not found: {index_path}")
    index = load_yaml(index_path)
    records = index.get("models")
    if not isinstance(records, list):
        raise CorrmarkError(f"{index_path}: 'models' must be a list of entries")
    entries = [_entry(record, folder, index_path) for record in records]
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CorrmarkError(f"{index_path}: duplicate entry name(s) {', '.join(duplicates)}")
    return entries


def zoo_entry(name: str, folder: str | os.PathLike | None = None) -> ZooEntry:
    entries = list_zoo(folder)
    for entry in entries:
        if entry.name == name:
            return entry
    raise UnknownNameError(f"unknown zoo model '{name}'; zoo models: {', '.join(e.name for e in entries)}")


def load_zoo_matcher(name: str, device="cpu", folder: str | os.PathLike | None = None, **options):
    """The Matcher of a zoo entry (its method's ``load_matcher`` on the entry's weights, with the entry's
    ``options``; ``options`` given here override them)."""
    return _load_entry(load_matcher, zoo_entry(name, folder), device, options)


def load_zoo_landmarks(name: str, device="cpu", folder: str | os.PathLike | None = None, **options):
    """The LandmarkModel of a zoo entry (its method's ``load_landmark_model`` on the entry's weights, with the
    entry's ``options``; ``options`` given here override them)."""
    return _load_entry(load_landmark_model, zoo_entry(name, folder), device, options)


def _load_entry(loader, entry: ZooEntry, device, options: dict):
    """``loader`` (``load_matcher`` or ``load_landmark_model``) on the entry's checked weights, with the entry's
    options overridden by ``options``."""
    return loader(entry.method, checkpoint=str(checked_weights(entry)), device=device, **{**entry.options, **options})


def check_zoo_entry(entry: ZooEntry, device="cpu") -> str:
    """Load an entry through its loader: "loads", or "error: <one line>" (for ``corrmark zoo --check``)."""
    try:
        _load_entry(load_landmark_model if entry.kind == "landmarks" else load_matcher, entry, device, {})
    except CorrmarkError as error:
        return f"error: {error}"
    return "loads"


def checked_weights(entry: ZooEntry) -> Path:
    """The entry's weights file (the zoo folder's, else a download kept in the cache, else downloaded now from its
    ``url`` when ``CORRMARK_ALLOW_DOWNLOAD=1``), matching its sha256 when the index gives one."""
    path = entry.path if entry.path.is_file() else entry.downloaded_path
    if not path.is_file():
        if not entry.url:
            raise CheckpointError(f"zoo model '{entry.name}': weights file {entry.path} is missing "
                                  f"(export it with: corrmark export runs/{entry.name}/final.pt {entry.path})")
        _download(entry)
    if entry.sha256:
        found = file_sha256(path)
        if found != entry.sha256.lower():
            raise CheckpointError(f"zoo model '{entry.name}': {path} has sha256 {found}, the index says "
                                  f"{entry.sha256}")
    return path


def _download(entry: ZooEntry) -> None:
    """Fetch ``entry.url`` into the cache (atomically; the caller checks the sha256). Offline unless allowed."""
    if not download_allowed():
        raise CheckpointError(f"zoo model '{entry.name}': weights not here; set {DOWNLOAD_ENV}=1 to download them "
                              f"from {entry.url}, or put the file at {entry.path}")
    target = entry.downloaded_path
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        urllib.request.urlretrieve(entry.url, partial)  # noqa: S310 (the URL comes from the user's zoo index)
        os.replace(partial, target)
    except OSError as error:
        raise CheckpointError(f"zoo model '{entry.name}': download from {entry.url} failed: {error}") from None
    finally:
        partial.unlink(missing_ok=True)


def _entry(record, folder: Path, index_path: Path) -> ZooEntry:
    if not isinstance(record, dict):
        raise CorrmarkError(f"{index_path}: every entry of 'models' must be a mapping, got {record!r}")
    label = record.get("name", "<no name>")
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise CorrmarkError(f"{index_path}: entry '{label}' lacks {', '.join(missing)}")
    for key, allowed in (("method", trained_methods()), ("kind", KINDS)):
        if record[key] not in allowed:
            raise CorrmarkError(f"{index_path}: entry '{label}' has {key} {record[key]!r}; "
                                f"allowed: {', '.join(allowed)}")
    relative = Path(str(record["file"]))
    if relative.is_absolute() or ".." in relative.parts:
        raise CorrmarkError(f"{index_path}: entry '{label}' file must be a path inside the zoo folder, got {relative}")
    if not isinstance(record["metrics"], dict):
        raise CorrmarkError(f"{index_path}: entry '{label}' metrics must be a mapping of name -> number")
    if not isinstance(record.get("options") or {}, dict):
        raise CorrmarkError(f"{index_path}: entry '{label}' options must be a mapping of loader option -> value")
    known = set(REQUIRED_FIELDS) | {"results", "sha256", "category", "trained_on_examples", "options", "url"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise CorrmarkError(f"{index_path}: entry '{label}' has unknown field(s) {', '.join(unknown)}")
    sha256 = record.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        # a digits-only hash unquoted in YAML reads as an integer: refuse it rather than skip the check
        raise CorrmarkError(f"{index_path}: entry '{label}' sha256 must be 64 hex digits in quotes, got {sha256!r}")
    if record.get("url") and not sha256:
        raise CorrmarkError(f"{index_path}: entry '{label}' has a url but no sha256 to check the download against")
    values = {key: record[key] for key in known if key in record}
    values["name"], values["file"] = str(values["name"]), str(relative)
    values["results"] = list(values.get("results") or [])
    values["trained_on_examples"] = list(values.get("trained_on_examples") or [])
    values["options"] = dict(values.get("options") or {})
    return ZooEntry(**values, path=folder / relative)
