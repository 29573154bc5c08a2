"""Checkpoint files: atomic writes, ``weights_only`` loading, strict state-dict matching, RNG state capture.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` can read (tensors and plain python values
only)::

    {"format": "corrmark-checkpoint", "version": 1,
     "model": state_dict, "optimizer": state_dict or None, "scheduler": state_dict or None,
     "step": int, "epoch": int, "rng": {"torch": ByteTensor, "numpy": {...}, "python": {...}},
     "config": dict (the experiment config), "metrics": dict}
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError

FORMAT = "corrmark-checkpoint"
VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


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


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None, optimizer=None, scheduler=None,
                    map_location="cpu") -> dict:
    """Read a checkpoint and load it strictly into ``model`` (and ``optimizer`` / ``scheduler`` when given).

    A key or shape mismatch raises CheckpointError naming the keys; nothing is loaded in that case. Returns the
    checkpoint dict (config, step, metrics, ...).
    """
    payload = read_checkpoint(path, map_location=map_location)
    if model is not None:
        check_state_keys(model, payload["model"], source=f"checkpoint {path}")
        model.load_state_dict(payload["model"], strict=True)
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    return payload


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The ``step_<N>.pt`` file with the largest N in ``folder`` (None when there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(match.group(1)), entry) for entry in folder.iterdir() if (match := _STEP_FILE.match(entry.name))]
    return max(found)[1] if found else None


def step_checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


# --- RNG states as tensors / plain python values (loadable with weights_only=True) ----------------------------------


def capture_rng_state() -> dict:
    """torch, numpy and python ``random`` global RNG states in a ``weights_only``-safe form."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())  # checkpoints may have been loaded with map_location=<gpu>
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].cpu().numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["state"].cpu().tolist()),
                     python_state["gauss_next"]))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python ``random``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
