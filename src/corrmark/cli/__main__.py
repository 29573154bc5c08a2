"""``python -m corrmark.cli``: the same as ``corrmark`` and ``python -m corrmark``."""

import sys

from . import main

sys.exit(main())
