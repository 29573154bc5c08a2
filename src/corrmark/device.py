"""Device names users type (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) -> a ``torch.device``, or one clear error."""

from __future__ import annotations

import torch

from .errors import CorrmarkError

AUTO = "auto"


def resolve_device(device: str | torch.device | None = AUTO) -> torch.device:
    """``auto`` (or None): the first CUDA GPU when there is one, else the CPU. Any other name must parse and exist
    on this machine; otherwise ``CorrmarkError`` names it and what is available."""
    if device is None or (isinstance(device, str) and device.strip().lower() == AUTO):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise CorrmarkError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CorrmarkError(f"device {device!r} is not available: this machine has no CUDA GPU (use auto or cpu)")
        if resolved.index is not None and resolved.index >= count:
            raise CorrmarkError(f"device {device!r} is not available: this machine has {count} CUDA GPU(s)")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise CorrmarkError(f"device {device!r} is not available on this machine (use auto or cpu)")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise CorrmarkError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return resolved
