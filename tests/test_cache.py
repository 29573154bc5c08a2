"""The on-disk cache shared by the training pipelines, and the in-memory descriptor cache (corrmark.cache)."""

import numpy as np
import torch

from corrmark.cache import DescriptorCache, FrozenBank, cache_dir, cache_key, load_or_build


class TinyBank(FrozenBank):
    FIELDS = ("features", "paths", "views", "meta")
    JSON_FIELDS = frozenset({"paths", "meta"})

    def __init__(self, features, paths, views, meta):
        self.features, self.paths, self.views, self.meta = features, list(paths), int(views), meta


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
    bank = TinyBank(torch.ones(2, 3, dtype=torch.float16), ["a.jpg", "b.jpg"], 2, {"seconds": 1.5, "groups": ["x"]})
    state = bank.state()
    assert state["paths"] == '["a.jpg", "b.jpg"]' and state["views"] == 2  # JSON text for lists and dicts
    stored = TinyBank.load_or_build("banks", "key", lambda: bank)
    loaded = TinyBank.load_or_build("banks", "key", lambda: 1 / 0)  # never built again
    for copy in (stored, loaded):
        assert torch.equal(copy.features, bank.features) and copy.features.dtype == torch.float16
        assert copy.paths == bank.paths and copy.views == 2 and copy.meta == bank.meta


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
