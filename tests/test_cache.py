"""The on-disk cache shared by the training pipelines, and the in-memory descriptor cache (corrmark.cache)."""

import pickle

import numpy as np
import pytest
import torch

from corrmark.cache import DescriptorCache, FeatureBank, cache_dir, cache_key, load_or_build


def tiny_bank() -> FeatureBank:
    """Two images, two views, with a per-view extra tensor and a scalar field."""
    return FeatureBank(features=torch.arange(24, dtype=torch.float16).reshape(4, 3, 2, 1),
                       mappings=torch.zeros(4, 2, 1, 2), groups=torch.tensor([0, 1]), paths=["a.jpg", "b.jpg"],
                       views=2, size=84, meta={"seconds": 1.5, "groups": ["x", "y"]})


def test_the_key_follows_the_description_not_its_order():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1, "b": [1, 2]}) != cache_key({"a": 1, "b": [2, 1]})
    assert len(cache_key({"a": 1})) == 20


def test_an_entry_is_built_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(3), "note": "hello"}

    first = load_or_build("things", "k1", build)
    second = load_or_build("things", "k1", build)
    assert len(calls) == 1 and torch.equal(first["x"], second["x"]) and second["note"] == "hello"
    assert sorted(path.name for path in cache_dir("things").iterdir()) == ["k1.pt"]  # no temporary file left
    load_or_build("things", "k2", build, cache=False)
    assert len(calls) == 2 and not (cache_dir("things") / "k2.pt").exists()


def test_a_bank_round_trips_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path))
    bank = tiny_bank()
    state = bank.state()
    # the stored dict keeps the constructor's field order and names (existing cache entries must stay readable)
    assert list(state) == ["features", "mappings", "groups", "paths", "views", "size", "meta"]
    assert state["paths"] == '["a.jpg", "b.jpg"]' and state["meta"] == '{"seconds": 1.5, "groups": ["x", "y"]}'
    stored = FeatureBank.load_or_build("banks", "key", lambda: bank)
    loaded = FeatureBank.load_or_build("banks", "key", lambda: 1 / 0)  # never built again
    assert list(torch.load(cache_dir("banks") / "key.pt", weights_only=True)) == list(state)
    for copy in (stored, loaded):
        assert torch.equal(copy.features, bank.features) and copy.features.dtype == torch.float16
        assert torch.equal(copy.mappings, bank.mappings) and copy.size == 84
        assert copy.paths == bank.paths and copy.views == 2 and copy.meta == bank.meta


def test_a_bank_reads_an_entry_stored_in_the_old_per_method_layout(tmp_path, monkeypatch):
    """A SCorrSAN entry as the former ``KeypointBank`` wrote it: its fields, in its order, paths and meta as JSON."""
    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path))
    old = {"features": torch.ones(2, 4, 3, 3, dtype=torch.float16), "points": torch.zeros(2, 5, 2),
           "shapes": torch.tensor([[40, 50], [60, 70]]), "groups": torch.tensor([0, 0]), "views": 1,
           "paths": '["a.jpg", "b.jpg"]', "size": 56, "stride": 14.0, "meta": '{"key": "k"}'}
    load_or_build("scorrsan_features", "k", lambda: old)
    bank = FeatureBank.load_or_build("scorrsan_features", "k", lambda: 1 / 0)
    assert bank.paths == ["a.jpg", "b.jpg"] and bank.meta == {"key": "k"} and bank.stride == 14.0
    assert bank.images == 2 and bank.channels == 4 and bank.rows([1, 0]).tolist() == [1, 0]
    state = bank.state()  # stored again exactly as it was
    assert list(state) == list(old)
    assert all(torch.equal(state[name], old[name]) if torch.is_tensor(old[name]) else state[name] == old[name]
               for name in old)


def test_bank_fields_are_attributes_and_a_missing_one_is_named():
    bank = tiny_bank()
    assert bank.images == 2 and bank.channels == 3
    assert bank.rows([0, 1], views=[1, 0]).tolist() == [1, 2]  # row = image * views + view
    with pytest.raises(AttributeError, match="no field 'masks'.*features, mappings"):
        bank.masks
    with pytest.raises(TypeError, match="groups, meta"):
        FeatureBank(features=torch.zeros(1), views=1)
    copy = pickle.loads(pickle.dumps(bank))  # banks travel to data-parallel workers
    assert torch.equal(copy.features, bank.features) and copy.paths == bank.paths


def test_the_descriptor_cache_computes_each_image_once_and_forgets_the_least_recently_used():
    images = [np.full((4, 5, 3), value, np.uint8) for value in range(3)]
    calls = []

    def describe(index):
        return lambda: calls.append(index) or f"descriptor {index}"

    cache = DescriptorCache(2)
    assert cache.get_or_compute(images[0], describe(0)) == "descriptor 0"
    assert cache.get_or_compute(images[1], describe(1)) == "descriptor 1"
    assert cache.get_or_compute(images[0].copy(), describe(0)) == "descriptor 0"  # found by content
    assert calls == [0, 1]
    cache.get_or_compute(images[2], describe(2))  # full: image 1, used longest ago, goes
    assert len(cache) == 2
    cache.get_or_compute(images[0], describe(0))
    cache.get_or_compute(images[1], describe(1))
    assert calls == [0, 1, 2, 1]
    cache.clear()
    assert len(cache) == 0


def test_the_descriptor_cache_key_includes_the_shape():
    flat = np.zeros((4, 6, 3), np.uint8)
    assert DescriptorCache.key_of(flat) != DescriptorCache.key_of(flat.reshape(6, 4, 3))  # same bytes
    assert DescriptorCache.key_of(flat) == DescriptorCache.key_of(flat.copy())
