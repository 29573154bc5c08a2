"""COCO run-length encoding of binary masks, without pycocotools.

An RLE is a list of run lengths over the mask flattened in column-major (Fortran) order, alternating background and
foreground and starting with background (a mask whose first pixel is foreground starts with a 0-length run).
The *compressed* string form stores each run in 5-bit groups, least significant first, as characters ``chr(48 + g)``
where bit 0x20 of g means "more groups follow" and, in the last group, bit 0x10 is the sign; runs after the second
are stored as the difference to the run two places earlier.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError


def decode_counts_string(text: str) -> list[int]:
    """Compressed COCO counts string -> list of run lengths."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise DatasetError(f"truncated COCO RLE string (ends inside a run): {text[:40]!r}")
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode_counts_string(counts: list[int]) -> str:
    """Run lengths -> compressed COCO counts string (inverse of ``decode_counts_string``)."""
    characters = []
    for index, count in enumerate(counts):
        value = int(count) - (int(counts[index - 2]) if index > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            characters.append(chr(group + (0x20 if more else 0) + 48))
    return "".join(characters)


def decode_rle(counts, height: int, width: int) -> np.ndarray:
    """A COCO RLE (compressed string, bytes, or list of run lengths) of an (height, width) mask -> bool (H, W)."""
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = decode_counts_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    total = height * width
    if any(run < 0 for run in runs) or sum(runs) != total:
        raise DatasetError(f"COCO RLE runs sum to {sum(runs)} (or are negative), expected {height}x{width} = {total}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T  # column-major order


def encode_rle(mask: np.ndarray) -> str:
    """bool (H, W) mask -> compressed COCO counts string."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # column-major order
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    boundaries = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return encode_counts_string(runs)
