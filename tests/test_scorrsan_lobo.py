"""SCorrSAN StanfordExtra leave-one-breed-out: no held-out dog reaches training, test pairs stay within the breed."""

import numpy as np
import pytest
import torch

from conftest import shared_path
from corrmark.cache import FeatureBank
from corrmark.data.keypoint_pairs import resolve_breed, stanfordextra_breeds, stanfordextra_fold, stanfordextra_images
from corrmark.errors import CorrmarkError, UnknownNameError

BREEDS = ["Border_terrier", "golden_retriever", "Rhodesian_ridgeback", "Weimaraner"]


@pytest.fixture(scope="module")
def root():
    return shared_path("stanfordextra-sample")


def paths(items, pairs=None):
    """The image paths of ``items``, or of the images used by ``pairs`` over them."""
    if pairs is None:
        return {item.path for item in items}
    return {items[index].path for pair in pairs for index in pair}


def test_breed_names_and_indices_resolve_to_the_same_fold():
    assert resolve_breed(BREEDS, 2) == resolve_breed(BREEDS, "rhodesian_RIDGEBACK") == "Rhodesian_ridgeback"
    with pytest.raises(UnknownNameError):
        resolve_breed(BREEDS, "poodle")
    with pytest.raises(CorrmarkError):
        resolve_breed(BREEDS, 4)
    with pytest.raises(CorrmarkError):
        resolve_breed(BREEDS, None)


def test_folds_keep_the_held_out_breed_out_of_training(root):
    everything = stanfordextra_images(root)
    assert stanfordextra_breeds(everything) == BREEDS
    for index, breed in enumerate(BREEDS):
        fold = stanfordextra_fold(root, index)
        held_out = {item.path for item in everything if item.group == breed}
        assert fold.held_out_breed == breed and len(held_out) >= 6
        assert not held_out & paths(fold.train_items)
        assert not held_out & paths(fold.train_items, fold.train_pairs)
        assert paths(fold.train_items) | paths(fold.test_items) == paths(everything)
        train_breeds = [(fold.train_items[s].group, fold.train_items[t].group) for s, t in fold.train_pairs]
        assert {group for pair in train_breeds for group in pair} == set(BREEDS) - {breed}
        assert any(s == t for s, t in train_breeds) and any(s != t for s, t in train_breeds)  # within and across
        count = len(fold.train_items)
        assert len(set(fold.train_pairs)) == count * (count - 1)


def test_test_pairs_are_every_ordered_pair_within_the_held_out_breed(root):
    from corrmark.data.stanfordextra import StanfordExtra

    for breed in BREEDS:
        fold = stanfordextra_fold(root, breed.lower())
        assert {item.group for item in fold.test_items} == {breed}
        count = len(fold.test_items)
        assert sorted(fold.test_pairs) == [(s, t) for s in range(count) for t in range(count) if s != t]
        # the image-by-image path (zero-shot matcher) sees the same pairs in the same order
        dataset = StanfordExtra(root, breeds=[breed], load_images=False)
        as_paths = [(str(dataset[i]["source_path"]), str(dataset[i]["target_path"])) for i in range(len(dataset))]
        assert as_paths == [(fold.test_items[s].path, fold.test_items[t].path) for s, t in fold.test_pairs]


def test_training_data_banks_only_the_other_breeds(root, monkeypatch):
    """The SCorrSAN data path (``data.dataset: stanfordextra``) with the feature extractor replaced by noise."""
    from corrmark.models.scorrsan import ScorrsanConfig
    from corrmark.train import scorrsan

    def fake_bank(items, *args, **kwargs):
        points = torch.tensor(np.stack([item.points for item in items]), dtype=torch.float32)
        return FeatureBank(features=torch.randn(len(items), 4, 4, 4).half(), points=points,
                           shapes=torch.tensor([item.shape for item in items]),
                           groups=torch.zeros(len(items), dtype=torch.int64), views=1,
                           paths=[item.path for item in items], size=56, stride=14.0, meta={})

    monkeypatch.setattr(scorrsan, "build_keypoint_bank", fake_bank)
    data = {"dataset": "stanfordextra", "root": str(root), "held_out_breed": "Weimaraner", "batch_size": 8}
    bank, source, _ = scorrsan.training_data(data, ScorrsanConfig(), progress=False)
    held_out = {item.path for item in stanfordextra_images(root) if item.group == "Weimaraner"}
    assert bank.meta["held_out_breed"] == "Weimaraner" and not held_out & set(bank.paths)
    assert len(bank.paths) == 25 - len(held_out)
    batches = list(source.batches(seed=0, epoch=0))
    assert sum(len(batch["valid"]) for batch in batches) == len(bank.paths) * (len(bank.paths) - 1)
    assert all(batch["valid"].any(1).all() for batch in batches)  # every training pair shares a visible keypoint
