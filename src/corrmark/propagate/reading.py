"""Reading a folder's images ahead of the matching: worker processes decode the next images while the current one
is matched. Matching stays one image at a time, so the results are those of reading each image when its turn comes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch.utils.data

from ..errors import CorrmarkError
from ..io import read_image

# Measured on 2 busy CPU cores (benchmarks/propagate_throughput.py, docs/PROPAGATE.md): decoding a 300x400 JPEG takes
# about 3 ms against 0.56 CPU seconds of matching with the ``best`` nn matcher, so reading ahead saves a few per cent
# at most there, for one more process. Reading in the loop stays the default; ``workers`` pays off where matching is
# fast (a GPU) or images are large.
DEFAULT_WORKERS = 0
DEFAULT_BATCH_SIZE = 4  # images a worker decodes per batch (then up to 2 batches per worker wait ready)

ImageOrReason = tuple  # (image (H, W, 3) uint8, None) or (None, failure reason)


def read_or_reason(path: Path, failures: tuple[type[BaseException], ...]) -> ImageOrReason:
    """``(read_image(path), None)``, or ``(None, "ErrorType: message")`` when reading raises one of ``failures``
    (the reason a propagation records for an image it cannot read). Other errors propagate."""
    try:
        return read_image(path), None
    except failures as error:
        return None, f"{type(error).__name__}: {error}"


class ImageFiles(torch.utils.data.Dataset):
    """The images of a path list, each as :func:`read_or_reason` gives it (read in a DataLoader worker)."""

    def __init__(self, paths: Sequence[Path], failures: tuple[type[BaseException], ...]):
        self.paths, self.failures = list(paths), failures

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> ImageOrReason:
        return read_or_reason(self.paths[index], self.failures)


def read_images(paths: Sequence[Path], failures: tuple[type[BaseException], ...], workers: int = DEFAULT_WORKERS,
                batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """``(path, image or None, failure reason or None)`` for every path, in order.

    ``workers`` = 0 reads each image when it is asked for; ``workers`` > 0 decodes ``batch_size`` images at a time in
    that many ``torch.utils.data.DataLoader`` worker processes, ahead of the consumer. An error outside ``failures``
    stops the iteration in both cases (with workers: re-raised by the DataLoader).
    """
    check_reading_options(workers, batch_size)
    if workers == 0:
        for path in paths:
            yield (path, *read_or_reason(path, failures))
        return
    loader = torch.utils.data.DataLoader(ImageFiles(paths, failures), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list)
    batches = iter(loader)
    try:
        start = 0
        for batch in batches:
            for path, (image, reason) in zip(paths[start:start + len(batch)], batch):
                yield path, image, reason
            start += len(batch)
    finally:
        del batches  # stops the worker processes now, also when the consumer stops early


def check_reading_options(workers: int, batch_size: int) -> None:
    if not isinstance(workers, int) or workers < 0:
        raise CorrmarkError(f"workers must be a whole number >= 0, got {workers!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CorrmarkError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
