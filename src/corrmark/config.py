"""Reading experiment config files (YAML), shared by evaluation and training.

Configs inherit: ``base: other.yaml`` (a path relative to the file) deep-merges the file over its base, so a variant
holds only the lines it changes. ``name`` and ``output`` are never inherited: a file's run is named after the file
(``configs/sfnet_general.yaml`` -> ``sfnet_general``, output ``runs/<name>``) unless it sets them itself.
``--set key.sub=value`` overrides (``apply_overrides``) rename the run after themselves, so an override never
resumes or overwrites the run of the plain file.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from .errors import CorrmarkError, UnknownNameError

BASE_KEY = "base"
NOT_INHERITED = ("name", "output", "config_file")


def load_config_file(path: str | os.PathLike) -> dict:
    """The config in a YAML file with its ``base:`` chain merged in (module docstring); ``name`` defaults to the
    file's stem and ``config_file`` records the path."""
    config = _merged(Path(path), ())
    config.setdefault("name", Path(path).stem)
    config["config_file"] = str(path)
    return config


def _merged(path: Path, seen: tuple) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        raise CorrmarkError(f"config {path}: 'base:' chain loops back to {seen[0]}")
    data = load_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise CorrmarkError(f"config {path}: 'base:' must be a file path, got {base!r}")
    parent = _merged(path.parent / base, seen + (resolved,))
    for key in NOT_INHERITED:
        parent.pop(key, None)
    return deep_merge(parent, data)


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(config: dict, overrides: list[str] | tuple = ()) -> dict:
    """``["train.steps=50", "data.limit=100"]`` (values parsed as YAML) applied to a copy of ``config``. The run is
    renamed ``<name>__<overrides>`` unless ``name`` is among them; its output becomes ``runs/<name>`` unless
    ``output`` is among them."""
    config = copy.deepcopy(config)
    if not overrides:
        return config
    for item in overrides:
        key, separator, text = str(item).partition("=")
        if not separator or not key or any(not part for part in key.split(".")):
            raise CorrmarkError(f"an override is key.sub=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise CorrmarkError(f"cannot parse the value of override {item!r}") from None
        target = config
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(target.setdefault(part, {}), dict):
                raise CorrmarkError(f"override {item!r}: {part} is not a section")
            target = target[part]
        target[last] = value
    keys = {str(item).partition("=")[0] for item in overrides}
    if "output" not in keys:  # the output follows the (new) name: runs/<name>
        config.pop("output", None)
        if "name" not in keys:
            suffix = "_".join(re.sub(r"[^A-Za-z0-9._=-]+", "-", item).strip("-") for item in overrides)
            config["name"] = f"{config.get('name') or config.get('method') or 'run'}__{suffix}"
    return config


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
