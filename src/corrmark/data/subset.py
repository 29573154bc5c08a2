"""Views of a dataset: chosen indices, or every k-th sample (PF-WILLOW's pairs are grouped by subclass, so every k-th
pair is a stratified subset)."""

from __future__ import annotations

from collections.abc import Sequence


class Subset(Sequence):
    """The samples of ``dataset`` at ``indices``, keeping its ``name`` (and ``describe`` when it has one)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)
        self.name = getattr(dataset, "name", type(dataset).__name__)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def describe(self) -> dict:
        describe = getattr(self.dataset, "describe", None)
        base = describe() if callable(describe) else {}
        return {**base, "subset_size": len(self.indices)}


def every_kth(dataset, step: int) -> Subset:
    return Subset(dataset, range(0, len(dataset), int(step)))
