"""The on-disk cache shared by the training pipelines (corrmark.cache)."""

import torch

from corrmark.cache import FrozenBank, cache_dir, cache_key, load_or_build


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
