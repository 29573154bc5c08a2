"""Reading checkpoints, caching converted weights, and the offline-by-default download switch."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..cache import cache_root
from ..errors import CheckpointError, CorrmarkError

StateDict = dict[str, torch.Tensor]

DOWNLOAD_ENV = "CORRMARK_ALLOW_DOWNLOAD"
# Bump when a converter changes its output, so stale cache files are rebuilt instead of trusted.
CONVERTER_VERSION = 1


def cache_dir() -> Path:
    """Where converted weights live: ``$CORRMARK_CACHE/weights`` or ``~/.cache/corrmark/weights``."""
    return cache_root() / "weights"


def download_allowed() -> bool:
    """True when the user opted in to fetching weights from the internet (``CORRMARK_ALLOW_DOWNLOAD=1``)."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes"}


def require_download_allowed(backbone: str) -> None:
    """Refuse to touch the network unless the user opted in: corrmark runs offline by default."""
    if not download_allowed():
        raise CorrmarkError(
            f"backbone {backbone} has no local weights: pass weights=<checkpoint file> "
            f"or set {DOWNLOAD_ENV}=1 to download them"
        )


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Tensors of a checkpoint file: a bare state dict or one under 'state_dict'/'model', 'module.' prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(error)}") from error
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming missing/unexpected keys or the first shape mismatch between ``state`` and ``expected``."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not match the model: missing keys {abbreviate(missing)}, "
            f"unexpected keys {abbreviate(unexpected)}"
        )
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"checkpoint {source} does not match the model: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )


def cached_conversion(file_name: str, source: Path, convert: Callable[[Path], StateDict]) -> StateDict:
    """``convert(source)``, computed once and kept in the cache directory.

    The cache file records the source's path and size and the converter version; a cache file that disagrees (the
    package was upgraded) or cannot be read is rebuilt.
    """
    target = cache_dir() / file_name
    stamp = {"source": str(source), "source_bytes": source.stat().st_size, "converter_version": CONVERTER_VERSION}
    cached = _read_cache(target)
    if cached is not None and all(cached.get(key) == value for key, value in stamp.items()):
        return cached["state_dict"]
    state = convert(source)
    _atomic_save({**stamp, "state_dict": state}, target)
    return state


def _read_cache(target: Path) -> dict | None:
    if not target.is_file():
        return None
    try:
        cached = torch.load(target, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache file is rebuilt, never fatal
        return None
    return cached if isinstance(cached, dict) and isinstance(cached.get("state_dict"), dict) else None


def _atomic_save(obj: object, target: Path) -> None:
    # Write to a temporary file in the same directory then rename, so a concurrent reader or an interrupted run
    # never sees a half-written cache file.
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def abbreviate(keys: list[str], limit: int = 5) -> str:
    """'[a, b, c] and 7 more' so that error messages stay one readable line."""
    shown = ", ".join(keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"[{shown}]{more}"


def one_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line CorrmarkErrors."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
