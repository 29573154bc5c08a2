"""The SCorrSAN faces protocol as a pair dataset: ``open_dataset("aflw-pairs", mtfl_root)``.

The seeded AFLW test pair list (MTFL ``testing.txt``; :class:`corrmark.data.keypoint_pairs.FacePairs`): ``count``
distinct faces chosen with ``seed``, pair ``i`` = (face ``order[i]``, face ``order[i + 1 mod count]``), 5 landmarks
each. ``corrmark eval aflw-pairs --root MTFL --eyes 0,1`` scores it with the kp-bbox and the inter-ocular thresholds,
the numbers of ``benchmarks/scorrsan_eval.py --protocol faces``.
"""

from __future__ import annotations

from ..registry import register_pair_dataset
from .keypoint_pairs import FacePairs


@register_pair_dataset("aflw-pairs")
class AFLWPairs(FacePairs):
    """``FacePairs`` behind the pair-dataset signature ``(root, split=None, **options)``; default split ``test``."""

    def __init__(self, root, split=None, *, count: int = 1000, seed: int = 0, load_images: bool = True):
        super().__init__(root, count=count, seed=seed, split=split or "test", load_images=load_images)
