"""Where the files that ship with corrmark live: the model zoo (``zoo/``) and the example pairs (``examples/``).

Looked up in this order: the environment variable (``$CORRMARK_ZOO``, ``$CORRMARK_EXAMPLES``), the source checkout's
top-level folder (a clone, ``pip install -e .``), then the copy an installed wheel carries in
``corrmark/_bundled/`` (``setup.py`` puts it there).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CorrmarkError

PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str, marker: str, variable: str) -> Path:
    """The folder ``name`` (``zoo`` or ``examples``) holding ``marker``; a CorrmarkError names where it looked."""
    configured = os.environ.get(variable)
    candidates = [Path(configured)] if configured else [PACKAGE.parents[1] / name, PACKAGE / "_bundled" / name]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    looked = ", ".join(str(candidate / marker) for candidate in candidates)
    raise CorrmarkError(f"{name} not found (looked for {looked}); set {variable} to a folder with {marker}")
