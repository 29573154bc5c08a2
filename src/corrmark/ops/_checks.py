"""Shape checks shared by the ops (programming errors, hence plain ``ValueError``)."""

from __future__ import annotations

import torch


def check_ndim(tensor: torch.Tensor, ndim: int, name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``ndim`` dims; ``layout`` names them, e.g. ``"(B, C, h, w)"``."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(tensor.shape)}")


def check_last_dim(tensor: torch.Tensor, size: int, name: str) -> None:
    """Raise ``ValueError`` unless the last dimension of ``tensor`` has ``size`` entries."""
    if tensor.shape[-1] != size:
        raise ValueError(f"{name} must end with a dimension of size {size}, got shape {tuple(tensor.shape)}")


def check_positive_int(value: int, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1 (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_same_batch_and_channels(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless two ``(B, C, ...)`` tensors agree on ``B`` and ``C``."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must share batch size and channel count"
        )


def check_min_ndim(tensor: torch.Tensor, ndim: int, name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``ndim`` dims or more; ``layout`` names them: ``"(..., H, W)"``."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(tensor).__name__}")
    if tensor.dim() < ndim:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(tensor.shape)}")
