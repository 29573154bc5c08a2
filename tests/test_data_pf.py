"""PF-WILLOW and PF-PASCAL loaders on tiny fixtures written in the published formats."""

import csv

import numpy as np
import pytest
import scipy.io
from PIL import Image

from corrmark.data import PFPascal, PFWillow, open_dataset
from corrmark.errors import DatasetError, UnknownNameError


def write_image(path, height, width, value=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path, format=fmt)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


WILLOW_HEADER = ["source_image", "target_image", "category", "XA", "YA", "XB", "YB"]


def joined(values):
    return ";".join(f"{v:g}" for v in values)


# --- PF-WILLOW ---------------------------------------------------------------------------------------------------

# 1-based (MATLAB) keypoints of three images, 10 keypoints each: x = 1..10 (+ offset), y = 2 * x.
ONE_BASED = {name: np.stack([np.arange(1, 11) + k, 2 * np.arange(1, 11) + k], axis=1).astype(float)
             for k, name in enumerate(["Cars_001a", "Cars_002a", "Cars_003b"])}  # fmt: skip


@pytest.fixture
def willow_root(tmp_path):
    folder = tmp_path / "PF-dataset-WILLOW" / "car(G)"
    for k, name in enumerate(ONE_BASED):
        write_image(folder / f"{name}.png", 40 + k, 30, value=10 * k)
        scipy.io.savemat(folder / f"{name}.mat", {"pts_coord": ONE_BASED[name].T})
    rows = []
    for source in ONE_BASED:
        for target in ONE_BASED:
            if source != target:
                a, b = ONE_BASED[source], ONE_BASED[target]
                rows.append([f"PF-dataset-WILLOW/car(G)/{source}.png", f"PF-dataset-WILLOW/car(G)/{target}.png",
                             "car(G)", joined(a[:, 0]), joined(a[:, 1]), joined(b[:, 0]), joined(b[:, 1])])  # fmt: skip
    write_csv(tmp_path / "test_pairs_all_ordered.csv", WILLOW_HEADER, rows)
    return tmp_path


def test_willow_samples_are_zero_based(willow_root):
    dataset = PFWillow(willow_root)
    assert len(dataset) == 6 and dataset.name == "pf-willow"
    sample = dataset[0]
    assert sample["pair_id"] == "car(G)/Cars_001a->Cars_002a"
    assert sample["category"] == "car(G)"
    assert sample["source_path"].endswith("car(G)/Cars_001a.png")
    assert sample["target_path"].endswith("car(G)/Cars_002a.png")
    np.testing.assert_array_equal(sample["source_points"], ONE_BASED["Cars_001a"] - 1)
    np.testing.assert_array_equal(sample["target_points"], ONE_BASED["Cars_002a"] - 1)
    assert sample["source_points"].dtype == np.float64 and sample["source_points"].shape == (10, 2)
    assert sample["source_shape"] == (40, 30) and sample["target_shape"] == (41, 30)
    assert sample["source_image"].shape == (40, 30, 3) and sample["source_image"].dtype == np.uint8
    assert sample["target_image"][0, 0, 0] == 10
    assert sample["valid"].dtype == bool and sample["valid"].all()
    assert sample["source_bbox"] is None and sample["target_bbox"] is None
    assert sample["source_mask"] is None and sample["target_mask"] is None
    assert sample["flags"] == {}
    assert dataset.describe()["pairs"] == 6


def test_willow_lazy_images_and_copies(willow_root):
    dataset = PFWillow(willow_root, load_images=False)
    sample = dataset[-1]
    assert "source_image" not in sample and sample["source_shape"] == (42, 30)
    sample["source_points"][:] = 0  # samples are copies: the dataset is unchanged
    np.testing.assert_array_equal(dataset[-1]["source_points"], ONE_BASED["Cars_003b"] - 1)


def test_willow_point_off_the_image_is_invalid(willow_root):
    # x = 31 (1-based) -> 30 (0-based) > W - 0.5 = 29.5 on a 30 px wide image: marked invalid, not clamped.
    rows = list(csv.reader(open(willow_root / "test_pairs_all_ordered.csv")))
    xs = ONE_BASED["Cars_001a"][:, 0].copy()
    xs[9] = 31
    rows[1][3] = joined(xs)
    write_csv(willow_root / "test_pairs_all_ordered.csv", rows[0], rows[1:])
    sample = PFWillow(willow_root)[0]
    assert sample["valid"].tolist() == [True] * 9 + [False]
    assert sample["source_points"][9, 0] == 30


def test_willow_weakalign_layout(tmp_path):
    # test_pairs_pf.csv: imageA, imageB, XA1..XA10, YA1..YA10, XB1..XB10, YB1..YB10 (1-based)
    folder = tmp_path / "PF-dataset" / "duck(S)"
    write_image(folder / "a.png", 50, 50)
    write_image(folder / "b.png", 50, 50)
    a, b = ONE_BASED["Cars_001a"], ONE_BASED["Cars_002a"]
    header = ["imageA", "imageB"] + [f"c{i}" for i in range(40)]
    row = ["PF-dataset/duck(S)/a.png", "PF-dataset/duck(S)/b.png", *a[:, 0], *a[:, 1], *b[:, 0], *b[:, 1]]
    write_csv(tmp_path / "test_pairs_pf.csv", header, [row])
    dataset = open_dataset("pf-willow", tmp_path)
    sample = dataset[0]
    assert sample["category"] == "duck(S)"
    np.testing.assert_array_equal(sample["source_points"], a - 1)
    np.testing.assert_array_equal(sample["target_points"], b - 1)


def test_willow_split_by_image(tmp_path):
    # 10 images in one subclass, all 90 ordered pairs; train = images 0-4 (20 pairs), test = 5-9 (20 pairs)
    folder = tmp_path / "PF-dataset-WILLOW" / "duck(S)"
    names = [f"img{i:02d}" for i in range(10)]
    for name in names:
        write_image(folder / f"{name}.png", 20, 20)
    points = joined(range(1, 11))
    rows = [[f"PF-dataset-WILLOW/duck(S)/{s}.png", f"PF-dataset-WILLOW/duck(S)/{t}.png", "duck(S)"] + [points] * 4
            for s in names[::-1] for t in names if s != t]  # fmt: skip
    write_csv(tmp_path / "test_pairs_all_ordered.csv", WILLOW_HEADER, rows)
    assert len(PFWillow(tmp_path)) == len(PFWillow(tmp_path, "all")) == 90
    train, test = PFWillow(tmp_path, "train", load_images=False), PFWillow(tmp_path, "test", load_images=False)
    assert len(train) == len(test) == 20
    train_images = {s["source_path"].split("/")[-1] for s in train} | {s["target_path"].split("/")[-1] for s in train}
    assert train_images == {f"{n}.png" for n in names[:5]}
    with pytest.raises(UnknownNameError, match="all, test, train, trn"):
        PFWillow(tmp_path, "validation")


def test_willow_missing_files(willow_root, tmp_path_factory):
    (willow_root / "PF-dataset-WILLOW" / "car(G)" / "Cars_002a.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 files .* first: .*Cars_002a\.png"):
        PFWillow(willow_root)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DatasetError, match="test_pairs_all_ordered.csv"):
        PFWillow(empty)


# --- PF-PASCAL ---------------------------------------------------------------------------------------------------


@pytest.fixture
def pascal_root(tmp_path):
    images = tmp_path / "PF-dataset-PASCAL" / "JPEGImages"
    write_image(images / "2008_000001.jpg", 60, 80, fmt="JPEG")
    write_image(images / "2008_000002.jpg", 70, 90, fmt="JPEG")
    annotations = tmp_path / "PF-dataset-PASCAL" / "Annotations" / "dog"
    annotations.mkdir(parents=True)
    scipy.io.savemat(annotations / "2008_000001.mat", {"bbox": np.array([[5, 6, 50, 40]])})
    header = ["source_image", "target_image", "class", "XA", "YA", "XB", "YB"]
    row = ["PF-dataset-PASCAL/JPEGImages/2008_000001.jpg", "PF-dataset-PASCAL/JPEGImages/2008_000002.jpg", "12",
           "1;11;21", "2;12;22", "31;41;51", "32;42;52"]  # fmt: skip
    write_csv(tmp_path / "test_pairs_pf_pascal.csv", header, [row])
    images = "PF-dataset-PASCAL/JPEGImages"
    train = [[f"{images}/2008_000002.jpg", f"{images}/2008_000001.jpg", "12", "1"]]
    write_csv(tmp_path / "train_pairs_pf_pascal.csv", ["source_image", "target_image", "class", "flip"], train)
    return tmp_path


def test_pascal_fixture(pascal_root):
    dataset = open_dataset("pf-pascal", pascal_root)  # default split: test
    assert len(dataset) == 1 and dataset.split == "test"
    sample = dataset[0]
    assert sample["category"] == "dog"  # class 12 (1-based) of the VOC list
    np.testing.assert_array_equal(sample["source_points"], [[0, 1], [10, 11], [20, 21]])
    np.testing.assert_array_equal(sample["target_points"], [[30, 31], [40, 41], [50, 51]])
    assert sample["valid"].tolist() == [True, True, True]
    np.testing.assert_array_equal(sample["source_bbox"], [4, 5, 49, 39])  # 1-based .mat box -> 0-based
    assert sample["target_bbox"] is None  # no annotation file for that image
    assert sample["source_image"].shape == (60, 80, 3) and sample["target_shape"] == (70, 90)
    assert sample["pair_id"] == "dog/2008_000001->2008_000002#0"


def test_pascal_train_split_without_points(pascal_root):
    dataset = PFPascal(pascal_root, "train", load_images=False)
    sample = dataset[0]
    assert sample["source_points"].shape == (0, 2) and sample["valid"].shape == (0,)
    assert sample["flags"] == {"flip": True}


def test_pascal_errors(pascal_root):
    with pytest.raises(DatasetError, match="val_pairs_pf_pascal.csv"):
        PFPascal(pascal_root, "val")
    (pascal_root / "PF-dataset-PASCAL" / "JPEGImages" / "2008_000001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 files .*2008_000001\.jpg"):
        PFPascal(pascal_root)
