"""Reading experiment config files (YAML), shared by evaluation and training."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import CorrmarkError


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
