"""Checkpoint files: atomic writes, ``weights_only`` reading checked against the method that reads it, strict
state-dict matching. Training (``corrmark.train.checkpoint``) and the model loaders (``corrmark.models``) share them.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` can read (tensors and plain python values
only)::

    {"format": "corrmark-checkpoint", "version": 1,
     "model": state_dict, "optimizer": state_dict or None, "scheduler": state_dict or None,
     "step": int, "epoch": int, "rng": {"torch": ByteTensor, "numpy": {...}, "python": {...}},
     "config": dict (the experiment config), "metrics": dict}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError

FORMAT = "corrmark-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``.

    An interrupted write never leaves a truncated checkpoint under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _permissions_from_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _permissions_from_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def read_checkpoint(path: str | os.PathLike, map_location="cpu", method: str | None = None) -> dict:
    """The checkpoint dict at ``path`` (``weights_only=True``); CheckpointError when missing or unreadable.

    With ``method`` (what a model loader expects) the checkpoint must also say how it was trained: a ``config``
    mapping (a model rebuilt from defaults would be silently wrong), of that method when it names one, and weights
    that are all finite."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many exception types for corrupt or foreign files
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {message}") from error
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path} is not a corrmark training checkpoint (no 'model' entry)")
    if method is not None:
        _check_trained_as(payload, path, method)
    return payload


def _check_trained_as(payload: dict, path: Path, method: str) -> None:
    config = payload.get("config")
    if config is None and not (method == "sfnet" and "sfnet_config" in payload):  # sfnet_config: the first format
        raise CheckpointError(f"{path} has no training config, so how its {method} model was built is unknown; "
                              f"use a checkpoint written by corrmark train or corrmark export")
    if config is not None and not isinstance(config, dict):
        raise CheckpointError(f"{path}: its 'config' must be a mapping, got {type(config).__name__}")
    trained = (config or {}).get("method")
    if trained is not None and trained != method:
        raise CheckpointError(f"{path} is a {trained} checkpoint, not {method}: load it as {trained} "
                              f"(--matcher {trained} or --model {trained} on the command line)")
    state = payload["model"]
    for key, value in (state.items() if isinstance(state, dict) else ()):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: weight {key} holds NaN or infinite values; the run that wrote it "
                                  f"diverged")


def check_state_keys(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming missing / unexpected keys and shape mismatches between ``state`` and ``model``."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state and isinstance(state[key], torch.Tensor) and state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if mismatched:
        problems.append(f"shape mismatch: {', '.join(mismatched[:8])}")
    if problems:
        raise CheckpointError(f"{source} does not match the model ({'; '.join(problems)})")
