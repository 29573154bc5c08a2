"""Dataset loaders: image-pair benchmarks (sequences of ``PairSample``) and image collections (``ImageSample``).

``open_dataset(name, root, split=None, **options)`` opens a pair dataset by name; ``open_image_dataset`` an image
collection. Each name is registered beside its loader class (``@register_pair_dataset`` /
``@register_image_dataset`` of ``corrmark.registry``); ``PAIR_DATASETS`` and ``IMAGE_DATASETS`` are those
registries. Paths always come from the caller; nothing is assumed about where data lives. Every loader checks its
root and the files its annotations reference when it is constructed and raises one ``DatasetError`` line naming the
first missing file. All keypoints are 0-based pixel (x, y) (1-based files are converted once, on reading).
"""

from __future__ import annotations

from ..registry import IMAGE_DATASETS, PAIR_DATASETS
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


def open_dataset(name: str, root, split=None, **options) -> PairDataset:
    """Open the pair dataset ``name`` (one of ``PAIR_DATASETS``) at ``root``; ``options`` go to its loader."""
    return PAIR_DATASETS[name](root, split, **options)


def open_image_dataset(name: str, root, split=None, **options) -> ImageDataset:
    """Open the image collection ``name`` (one of ``IMAGE_DATASETS``) at ``root``."""
    return IMAGE_DATASETS[name](root, split, **options)


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
