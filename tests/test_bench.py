"""``corrmark bench``: one JSON row per (matcher, size), each measured in its own process, on a fake matcher."""

import json

import numpy as np
import pytest

from corrmark.bench import (MatcherSpec, bench_matchers, example_pairs, format_row, parse_matcher_spec, preset_spec,
                            run_bench)
from corrmark.cli import build_parser
from corrmark.errors import CorrmarkError
from corrmark.models import Matcher

ROW_KEYS = {"matcher", "describe", "image_size", "seconds_per_pair_keypoints", "seconds_per_pair_dense",
            "peak_rss_mb", "threads", "machine"}


class FakeMatcher(Matcher):
    """Identity correspondence; ``ballast_mb`` of memory held for the matcher's lifetime."""

    name = "fake"

    def __init__(self, image_size=40, ballast_mb=0):
        self.image_size = image_size
        self.ballast = np.ones(int(ballast_mb) * 2**20 // 8)  # touched pages: counted in the resident set
        self._cache = {"stale": True}

    def describe(self):
        return {"name": self.name, "image_size": self.image_size}

    def estimate_mapping(self, source, target):
        assert not self._cache, "each timed call starts with empty descriptor caches"
        height, width = np.asarray(target).shape[:2]
        ys, xs = np.mgrid[0:height, 0:width]
        return np.stack([xs, ys], axis=-1).astype(float)


def fake_matcher(device="cpu", image_size=40):
    # 300 MB at the first size only: the row of the next size must not inherit it (a fresh process per row)
    return FakeMatcher(image_size, ballast_mb=300 if image_size == 32 else 0)


def fixed_size_matcher(device="cpu"):
    return FakeMatcher(image_size=40)


def failing_matcher(device="cpu", **options):
    raise CorrmarkError("no weights for this fake")


@pytest.fixture(scope="module")
def measured():
    """Rows of a fake at two sizes and a fixed-size fake, then the error of a matcher that fails in its process."""
    specs = [MatcherSpec(factory=fake_matcher, label="fake"), MatcherSpec(factory=fixed_size_matcher, label="fixed"),
             MatcherSpec(factory=failing_matcher, label="failing")]
    rows = []
    parent_ballast = np.ones(400 * 2**20 // 8)  # a heavy parent: its memory must not show in the children's rows
    with pytest.raises(CorrmarkError) as error:
        bench_matchers(specs, example_pairs(2), sizes=[32, 48], repeats=2, device="cpu", threads=1,
                       report=rows.append)
    del parent_ballast
    return rows, str(error.value)


def test_one_row_per_matcher_and_size_with_positive_numbers(measured):
    rows, _ = measured
    assert [(row["matcher"], row["image_size"]) for row in rows] == [("fake", 32), ("fake", 48), ("fixed", 40)]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["seconds_per_pair_keypoints"] > 0 and row["seconds_per_pair_dense"] > 0 and row["peak_rss_mb"] > 0
        assert row["threads"] == 1 and row["pairs"] == 2 and row["repeats"] == 2
        assert row["describe"]["name"] == "fake" and row["machine"]["cpus"] >= 1
    assert rows[-1]["fixed_size"] and "fixed_size" not in rows[0]
    json.dumps(rows)  # JSON as it is
    assert format_row(rows[1]).startswith("fake @ 48:")


def test_each_row_has_its_own_process(measured):
    rows, _ = measured
    # the 300 MB of the first row did not carry over to the second, nor did the parent's 400 MB
    assert rows[0]["peak_rss_mb"] > rows[1]["peak_rss_mb"] + 200


def test_errors_in_the_child_become_one_line(measured):
    _, message = measured
    assert message == "benchmarking failing at size 32: no weights for this fake"


def test_missing_checkpoint_fails_before_measuring(tmp_path):
    with pytest.raises(CorrmarkError, match="checkpoint file not found: .*absent.pt"):
        bench_matchers(["nn", f"sfnet:{tmp_path / 'absent.pt'}"], example_pairs(1))


def test_specs_and_command_line():
    assert parse_matcher_spec("sfnet:runs/a/final.pt") == MatcherSpec("sfnet", "runs/a/final.pt")
    assert parse_matcher_spec("nn").title == "nn" and preset_spec("best").title == "nn(preset=best)"
    with pytest.raises(CorrmarkError):
        parse_matcher_spec(":x")
    with pytest.raises(CorrmarkError, match="number of pairs must be at least 1"):
        run_bench(pairs=0)
    args = build_parser().parse_args(["bench", "--preset", "best", "--sizes", "224", "336", "--pairs", "2",
                                      "--json", "out.json"])
    assert (args.preset, args.sizes, args.pairs, args.json) == (["best"], [224, 336], 2, "out.json")


def test_precision_reaches_every_matcher_and_the_command_line(monkeypatch):
    import corrmark.bench as bench

    seen = []
    monkeypatch.setattr(bench, "bench_matchers", lambda specs, *rest: seen.extend(specs) or [])
    run_bench(["nn", "sfnet:zoo/sfnet_cub.pt"], ["best"], pairs=1, precision="bf16")
    assert [spec.options.get("precision") for spec in seen] == ["bf16"] * 3
    assert seen[2].options == {"preset": "best", "precision": "bf16"}
    seen.clear()
    run_bench(["nn"], pairs=1)
    assert "precision" not in seen[0].options  # not given: the matcher's default (fp32)
    assert build_parser().parse_args(["bench", "--precision", "bf16"]).precision == "bf16"


def test_descriptor_caches_of_the_matcher_and_of_what_it_holds_are_emptied():
    from corrmark.bench import forget_descriptors
    from corrmark.cache import DescriptorCache

    class Runtime:  # JLAD's matcher keeps its cache on the runtime it holds
        _cache = DescriptorCache(4)

    matcher = FakeMatcher()
    matcher.runtime = Runtime()
    matcher._cache = DescriptorCache(4)
    for cache in (matcher._cache, matcher.runtime._cache):
        cache.get_or_compute(np.zeros((2, 2, 3), np.uint8), lambda: "descriptors")
    forget_descriptors(matcher)
    assert len(matcher._cache) == 0 and len(matcher.runtime._cache) == 0
