"""Device names users type (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) -> a ``torch.device``, or one clear error;
and mixed precision (``fp32``, ``bf16``, ``fp16``): the autocast context and loss scaler the models and trainer use."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

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


# --- mixed precision ------------------------------------------------------------------------------------------------

FP32, BF16, FP16 = "fp32", "bf16", "fp16"
PRECISIONS = {FP32: torch.float32, BF16: torch.bfloat16, FP16: torch.float16}
DEFAULT_PRECISION = FP32


def check_precision(precision: str | None = DEFAULT_PRECISION) -> str:
    """``fp32`` (None: the default, full precision), ``bf16`` or ``fp16`` (any case); else one ``CorrmarkError``."""
    if precision is None:
        return DEFAULT_PRECISION
    name = precision.strip().lower() if isinstance(precision, str) else precision
    if not isinstance(name, str) or name not in PRECISIONS:
        raise CorrmarkError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    return name


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: str | None = DEFAULT_PRECISION) -> Iterator[None]:
    """Run the block under ``torch.autocast`` on ``device``'s type at the precision's dtype; for fp32 a null
    context, so full precision gives exactly the numbers of code without it.

    torch answers a dtype its autocast does not take on a device with a warning and a silent full-precision run;
    here that (and a device type without autocast) is one ``CorrmarkError`` instead."""
    precision = check_precision(precision)
    if precision == FP32:
        yield
        return
    device_type = torch.device(device).type
    unsupported = f"precision {precision} is not supported on {device_type} by torch {torch.__version__}; use fp32"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the "disabling autocast" warning: checked below instead
            context = torch.autocast(device_type=device_type, dtype=PRECISIONS[precision])
    except RuntimeError as error:  # e.g. bf16 on a GPU without it, or a device type without autocast
        raise CorrmarkError(f"{unsupported} ({str(error).splitlines()[0]})") from None
    with context:
        if not torch.is_autocast_enabled(device_type):
            raise CorrmarkError(unsupported)
        yield


def check_autocast(device: str | torch.device, precision: str | None = DEFAULT_PRECISION) -> str:
    """The checked precision name, after making sure ``autocast(device, precision)`` works here (models call it
    when they are built, so an unsupported combination fails before any work)."""
    with autocast(device, precision):
        pass
    return check_precision(precision)


def grad_scaler(device: str | torch.device, precision: str | None = DEFAULT_PRECISION) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 training needs, or None. fp16 keeps 5 exponent bits, so small gradients flush to zero
    unless the loss is scaled up before ``backward`` (and the gradients down before the update); bf16 has float32's
    exponent range and fp32 is full precision: neither needs one. Used on every device, not only CUDA: the
    underflow is the format's, and a CPU run then tests the same code path a GPU run takes."""
    if check_precision(precision) != FP16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)
