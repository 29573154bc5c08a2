"""Dataset loaders: image-pair benchmarks (sequences of ``PairSample``) and image collections (``ImageSample``).

``open_dataset(name, root, split=None, **options)`` opens a pair dataset by name; ``open_image_dataset`` an image
collection. Paths always come from the caller; nothing is assumed about where data lives. Every loader checks its root
and the files its annotations reference when it is constructed and raises one ``DatasetError`` line naming the first
missing file. All keypoints are 0-based pixel (x, y) (1-based files are converted once, on reading).
"""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import ImageDataset, ImageSample, PairDataset, PairSample
from .caltech import Caltech101
from .flo import flow_to_mapping, read_flo, write_flo
from .images import MTFL, CUBUnlabeled, ImageFolder
from .pairs_file import PairsFile
from .pf_pascal import PFPascal
from .pf_willow import PFWillow
from .rle import decode_rle, encode_rle
from .spair import SPair71k
from .stanfordextra import StanfordExtra
from .tss import TSS

PAIR_DATASETS = {
    "pf-willow": PFWillow,
    "pf-pascal": PFPascal,
    "spair-71k": SPair71k,
    "tss": TSS,
    "caltech-101": Caltech101,
    "stanfordextra": StanfordExtra,
    "pairs-file": PairsFile,
}
IMAGE_DATASETS = {"image-folder": ImageFolder, "mtfl": MTFL, "cub-unlabeled": CUBUnlabeled}


def open_dataset(name: str, root, split=None, **options) -> PairDataset:
    """Open the pair dataset ``name`` (one of ``PAIR_DATASETS``) at ``root``; ``options`` go to its loader."""
    return _lookup(name, PAIR_DATASETS, "pair dataset")(root, split, **options)


def open_image_dataset(name: str, root, split=None, **options) -> ImageDataset:
    """Open the image collection ``name`` (one of ``IMAGE_DATASETS``) at ``root``."""
    return _lookup(name, IMAGE_DATASETS, "image dataset")(root, split, **options)


def _lookup(name: str, table: dict, kind: str):
    key = str(name).strip().lower()
    if key not in table:
        raise UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}")
    return table[key]


__all__ = [
    "IMAGE_DATASETS",
    "PAIR_DATASETS",
    "CUBUnlabeled",
    "Caltech101",
    "ImageDataset",
    "ImageFolder",
    "ImageSample",
    "MTFL",
    "PFPascal",
    "PFWillow",
    "PairDataset",
    "PairSample",
    "PairsFile",
    "SPair71k",
    "StanfordExtra",
    "TSS",
    "decode_rle",
    "encode_rle",
    "flow_to_mapping",
    "open_dataset",
    "open_image_dataset",
    "read_flo",
    "write_flo",
]
