"""Training images from ``data.sources`` (corrmark.data.sources): parsing, seeded subsets, groups, per-trainer rules,
and the image lists and feature-bank keys of shipped configs, pinned to what the per-trainer collectors gave before
they became one."""

import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from corrmark.config import load_config_file
from corrmark.data.sources import SourceRules, collect_source_images, seeded_subset
from corrmark.errors import CorrmarkError, UnknownNameError
from corrmark.train import c3, jlad, sfnet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """An image folder with categories ``cat`` (4 images) and ``dog`` (2 images) of different sizes."""
    root = tmp_path_factory.mktemp("sources")
    for category, count in (("cat", 4), ("dog", 2)):
        (root / category).mkdir()
        for index in range(count):
            Image.fromarray(np.zeros((10 + index, 20, 3), np.uint8)).save(root / category / f"{index}.png")
    return root


def test_every_image_in_dataset_order_with_its_shape_and_the_dataset_as_default_group(folder):
    images = collect_source_images([{"dataset": "image-folder", "root": str(folder)}], 0, SourceRules("T"))
    assert [Path(image.path).relative_to(folder).as_posix() for image in images] == [
        "cat/0.png", "cat/1.png", "cat/2.png", "cat/3.png", "dog/0.png", "dog/1.png"]
    assert [image.shape for image in images] == [(10, 20), (11, 20), (12, 20), (13, 20), (10, 20), (11, 20)]
    assert {image.group for image in images} == {"image-folder"}
    assert [image.index for image in images] == list(range(6)) and {image.source for image in images} == {0}


def test_category_groups_and_named_groups_per_source(folder):
    sources = [{"dataset": "image-folder", "root": str(folder), "group": "@category"},
               {"dataset": "image-folder", "root": str(folder), "group": "pets", "limit": 1}]
    images = collect_source_images(sources, 0, SourceRules("T", grouped=True))
    assert [image.group for image in images] == ["image-folder/cat"] * 4 + ["image-folder/dog"] * 2 + ["pets"]
    assert images[-1].source == 1


def test_the_limit_subset_follows_each_trainers_seed(folder):
    """SFNet, JLAD and C3 seed the subset of source n with [data_seed, n], [data_seed, n, 17], [data_seed, n, 41]:
    the formulas of their former collectors, so the same config still picks the same images."""
    sources = [{"dataset": "image-folder", "root": str(folder)}, {"dataset": "image-folder", "root": str(folder),
                                                                   "limit": 3}]
    everything = [image.path for image in collect_source_images(sources[:1], 0, SourceRules("T"))]
    picked = {}
    for name, rules, salt in (("sfnet", sfnet.SOURCE_RULES, []), ("jlad", jlad.SOURCE_RULES, [17]),
                              ("c3", c3.SOURCE_RULES, [41])):
        chosen = np.random.default_rng([5, 1, *salt]).choice(6, 3, replace=False)
        images = collect_source_images(sources, 5, rules)
        assert [image.path for image in images] == everything + [everything[i] for i in sorted(chosen)]
        picked[name] = tuple(image.index for image in images[6:])
    assert len(set(picked.values())) > 1  # the salts are not interchangeable


def test_seeded_subset():
    assert seeded_subset(5, None, [0]) == seeded_subset(5, 5, [0]) == seeded_subset(5, 9, [0]) == [0, 1, 2, 3, 4]
    chosen = seeded_subset(100, 10, [3, 0, 17])
    assert chosen == sorted(chosen) and len(set(chosen)) == 10 and chosen == seeded_subset(100, 10, [3, 0, 17])
    assert chosen != seeded_subset(100, 10, [3, 0, 41])
    assert seeded_subset(4, 0, [1]) == []


def test_unknown_keys_fail_before_any_dataset_is_opened_and_name_the_valid_ones(tmp_path):
    sources = [{"dataset": "image-folder", "root": str(tmp_path / "missing"), "limt": 3, "mask": "saliency"}]
    with pytest.raises(UnknownNameError) as caught:
        collect_source_images(sources, 0, sfnet.SOURCE_RULES)
    message = str(caught.value)
    assert "SFNet data source" in message and "limt, mask" in message
    assert "options: dataset, root, split, limit, group, masks, saliency_threshold" in message
    with pytest.raises(UnknownNameError, match="option.*group; options: dataset, root, split, limit$"):
        collect_source_images([{"dataset": "mtfl", "root": "x", "group": "face"}], 0, c3.SOURCE_RULES)


def test_missing_keys_bad_sources_and_too_few_images_are_clear_errors(folder):
    with pytest.raises(CorrmarkError, match="JLAD data source 1 needs root"):
        collect_source_images([{"dataset": "mtfl", "root": "x"}, {"dataset": "mtfl"}], 0, jlad.SOURCE_RULES)
    with pytest.raises(CorrmarkError, match="data source 0: expected a mapping"):
        collect_source_images(["mtfl"], 0, jlad.SOURCE_RULES)
    with pytest.raises(CorrmarkError, match="must be a list of sources"):
        collect_source_images({"dataset": "mtfl", "root": "x"}, 0, jlad.SOURCE_RULES)
    with pytest.raises(CorrmarkError, match="C3 needs at least 2 training image.*hold 1"):
        collect_source_images([{"dataset": "image-folder", "root": str(folder), "limit": 1}], 0, c3.SOURCE_RULES)
    with pytest.raises(UnknownNameError, match="unknown image dataset"):
        collect_source_images([{"dataset": "nope", "root": str(folder)}], 0, c3.SOURCE_RULES)


def test_sfnet_options_default_per_source_and_are_checked(folder):
    sources = [{"dataset": "image-folder", "root": str(folder), "limit": 1},
               {"dataset": "image-folder", "root": str(folder), "limit": 1, "saliency_threshold": 0.4}]
    images = sfnet.collect_training_images(sources, 0)
    assert [image.options for image in images] == [{"masks": "saliency", "saliency_threshold": 0.6},
                                                  {"masks": "saliency", "saliency_threshold": 0.4}]
    with pytest.raises(UnknownNameError, match="unknown mask source 'silhouette'"):
        sfnet.collect_training_images([{**sources[0], "masks": "silhouette"}], 0)
    with pytest.raises(CorrmarkError, match="image-folder has no masks"):
        sfnet.collect_training_images([{**sources[0], "masks": "dataset"}], 0)


def test_stanfordextra_images_carry_their_silhouettes():
    root = shared_path("stanfordextra-sample")
    images = sfnet.collect_training_images([{"dataset": "stanfordextra", "root": str(root), "masks": "dataset",
                                             "group": "@category", "limit": 3}], 0)
    assert len(images) == 3 and {image.group for image in images} == {"stanfordextra/"}
    mask = images[0].dataset.mask(images[0].index, images[0].shape)
    assert mask.shape == images[0].shape and mask.any()


# --- shipped configs: the same images and the same feature-bank keys as before the refactor -------------------------


class KeyFound(Exception):
    pass


def _image_list(method: str, data: dict) -> list:
    seed = int(data.get("data_seed", 0))
    if method == "sfnet":
        return [[image.path, image.group, image.options["masks"], float(image.options["saliency_threshold"])]
                for image in sfnet.collect_training_images(data["sources"], seed)]
    if method == "jlad":
        return [[image.path, image.group, list(image.shape)]
                for image in jlad.collect_training_images(data["sources"], seed)]
    return c3.collect_training_paths(data["sources"], seed)


def _first_cache_key(config: dict, monkeypatch) -> tuple[str, str]:
    """``(kind, key)`` of the first cache entry ``build_experiment`` asks for; nothing is built or loaded."""
    import corrmark.cache

    def stop(kind, key, build, cache=True):
        raise KeyFound(kind, key)

    module = importlib.import_module(f"corrmark.train.{config['method']}")
    monkeypatch.setattr(corrmark.cache, "load_or_build", stop)
    if hasattr(module, "load_or_build"):
        monkeypatch.setattr(module, "load_or_build", stop)
    with pytest.raises(KeyFound) as found:
        module.build_experiment(config, progress=False)
    return found.value.args


# (config, images, sha256 of the image list as JSON (first 16 hex digits), cache kind and key); the values were
# computed with the former train/sfnet.collect_images, train/jlad.collect_images and train/c3.collect_paths.
# 2e918f20... and 3e3f8633... are banks in use in ~/.cache/corrmark.
SHIPPED = [
    ("sfnet_general", 1650, "83aea19a70fa9579", "sfnet_features", "2e918f20a4882f55750f"),
    ("sfnet_pfwillow_transductive", 100, "3ccdf29c4df413fa", "sfnet_features", "a8246485b5b6456226fc"),
    ("jlad_cub_k10", 1000, "bd5a0d035a205873", "jlad_features", "139efa2eee9826b03956"),
    ("jlad_pfwillow_alone", 50, "6ad5aa604cd04c3b", "jlad_features", "6e1f84f0821dad5a6da9"),
    ("c3_cub_k10", 2903, "5bdafc8ab6ca53de", "c3_images", "901ff87cc1c5947180f5"),
    ("scorrsan_pfwillow_best_baseline", None, None, "scorrsan_features", "3e3f86336866bb645f07"),
]


@pytest.mark.parametrize("name, count, digest, kind, key", SHIPPED, ids=[row[0] for row in SHIPPED])
def test_shipped_configs_keep_their_images_and_cache_keys(name, count, digest, kind, key, monkeypatch):
    config = load_config_file(REPO / "configs" / f"{name}.yaml")
    data = dict(config["data"])
    for root in [source["root"] for source in data.get("sources", [])] + [data.get("root")]:
        if root is not None and not (REPO / root).exists():  # config roots are relative to the repository
            pytest.skip(f"data not found: {root}")
    shared_path()
    monkeypatch.chdir(REPO)
    if count is not None:
        images = _image_list(config["method"], data)
        assert len(images) == count
        assert hashlib.sha256(json.dumps(images).encode()).hexdigest()[:16] == digest
    assert _first_cache_key(config, monkeypatch) == (kind, key)
