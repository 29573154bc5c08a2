"""Where a result was measured: the machine description every result JSON carries under ``machine``."""

from __future__ import annotations

import os
import platform

import torch


def machine_info() -> dict:
    """Platform, processor, CPU count, Python and torch versions and torch's thread count."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}
