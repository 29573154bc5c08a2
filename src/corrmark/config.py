"""Reading experiment config files (YAML), shared by evaluation and training."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import CorrmarkError, UnknownNameError


def load_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML file; a missing file, a parse error or a non-mapping is one clear CorrmarkError."""
    path = Path(path)
    if not path.is_file():
        raise CorrmarkError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CorrmarkError(f"cannot parse config {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CorrmarkError(f"config {path} must be a mapping of keys to values")
    return data


def check_known_keys(values: dict | None, known, what: str) -> None:
    """One ``UnknownNameError`` naming every key of ``values`` outside ``known`` and listing ``known`` (in its order):
    a typo in a config section fails before any slow work starts."""
    known = list(known)
    unknown = sorted(set(values or {}) - set(known))
    if unknown:
        raise UnknownNameError(f"unknown {what} option(s) {', '.join(unknown)}; options: {', '.join(known)}")
