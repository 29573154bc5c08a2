"""Training checkpoints: strict loading for resuming (model, optimizer, scheduler), the latest ``step_<N>.pt`` of a
run, and RNG state capture.

Writing and reading the files (``save_checkpoint``, ``read_checkpoint``, ``check_state_keys``, the format) is
``corrmark.checkpoints``, shared with the model loaders; its names are re-exported here.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import FORMAT, VERSION, check_state_keys, read_checkpoint, save_checkpoint
from ..errors import CheckpointError

__all__ = ["FORMAT", "VERSION", "capture_rng_state", "check_state_keys", "latest_checkpoint", "load_checkpoint",
           "read_checkpoint", "restore_rng_state", "save_checkpoint", "seed_everything", "step_checkpoint_name"]

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


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
