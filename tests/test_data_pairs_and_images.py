"""The generic pairs file, the image collections (ImageFolder, MTFL, CUB) and the dataset registry, on fixtures."""

import csv
from pathlib import Path
import json

import numpy as np
import pytest
from PIL import Image

from corrmark.data import (
    IMAGE_DATASETS,
    MTFL,
    PAIR_DATASETS,
    CUBUnlabeled,
    ImageFolder,
    PairsFile,
    open_dataset,
    open_image_dataset,
)
from corrmark.data.images import center_crop_box, write_center_cropped_mtfl
from corrmark.errors import DatasetError, UnknownNameError


def write_image(path, height=6, width=8, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


# --- pairs file --------------------------------------------------------------------------------------------------


def test_pairs_csv(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", 6, 8, 1)
    write_image(tmp_path / "imgs" / "b.png", 7, 9, 2)
    with open(tmp_path / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "target", "source_points", "target_points", "category"])
        writer.writerow(["imgs/a.png", "imgs/b.png", "[[1, 2], [3, 4], null]", "1;2;nan;nan;5;6", "cup"])
        writer.writerow(["imgs/b.png", "imgs/a.png", "", "", ""])
    dataset = open_dataset("pairs-file", tmp_path / "pairs.csv")
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert first["category"] == "cup" and second["category"] == "object"
    assert first["pair_id"] == "000000:a->b"
    np.testing.assert_array_equal(first["source_points"], [[1, 2], [3, 4], [np.nan, np.nan]])
    np.testing.assert_array_equal(first["target_points"], [[1, 2], [np.nan, np.nan], [5, 6]])
    assert first["valid"].tolist() == [True, False, False]
    assert first["source_path"] == str(tmp_path / "imgs" / "a.png")
    assert first["target_image"][0, 0, 0] == 2
    assert second["source_points"].shape == (0, 2)


def test_pairs_json_one_based_and_errors(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    pairs = {"pairs": [{"source": "a.png", "target": "b.png", "source_points": [[1, 1], [2, 3]],
                        "target_points": [[4, 5], [6, 6]], "pair_id": "p1"}]}  # fmt: skip
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    sample = PairsFile(tmp_path / "pairs.json", one_based=True)[0]
    assert sample["pair_id"] == "p1"
    np.testing.assert_array_equal(sample["source_points"], [[0, 0], [1, 2]])
    np.testing.assert_array_equal(sample["target_points"], [[3, 4], [5, 5]])
    pairs["pairs"][0]["target_points"] = [[4, 5]]
    (tmp_path / "bad.json").write_text(json.dumps(pairs))
    with pytest.raises(DatasetError, match="2 source points but 1 target points"):
        PairsFile(tmp_path / "bad.json")
    (tmp_path / "missing.json").write_text(json.dumps([{"source": "a.png", "target": "zzz.png"}]))
    with pytest.raises(DatasetError, match=r"1 of 2 files .*zzz\.png"):
        PairsFile(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match="file not found"):
        PairsFile(tmp_path / "nope.csv")


# --- image collections -------------------------------------------------------------------------------------------


def test_image_folder_sorted_recursive_and_skips_unreadable(tmp_path):
    write_image(tmp_path / "b" / "2.png", value=3)
    write_image(tmp_path / "a" / "1.png", value=1)
    write_image(tmp_path / "top.png", value=2)
    (tmp_path / "a" / "broken.jpg").write_text("not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = open_image_dataset("image-folder", tmp_path)
    assert [s["path"][len(str(tmp_path)) + 1 :] for s in dataset] == ["a/1.png", "b/2.png", "top.png"]
    assert [s["category"] for s in dataset] == ["a", "b", ""]
    assert [s["label"] for s in dataset] == [1, 2, 0]  # index in the sorted categories ["", "a", "b"]
    sample = dataset[1]
    assert sample["image"][0, 0, 0] == 3 and sample["shape"] == (6, 8)
    assert sample["points"].shape == (0, 2) and sample["valid"].shape == (0,)
    assert len(dataset.skipped) == 1 and dataset.skipped[0][0].endswith("broken.jpg")
    assert dataset.describe()["skipped"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no readable image"):
        ImageFolder(empty)


def test_image_folder_val_split_holds_every_tenth_image_of_each_category(tmp_path):
    for index in range(12):
        write_image(tmp_path / "cars" / f"{index:02d}.png")
    for index in range(3):
        write_image(tmp_path / "ducks" / f"{index:02d}.png")
    names = lambda dataset: [Path(record["path"]).relative_to(tmp_path).as_posix() for record in dataset]
    every = names(ImageFolder(tmp_path))
    val, train = names(ImageFolder(tmp_path, "val")), names(ImageFolder(tmp_path, "train"))
    assert val == ["cars/09.png"]  # the 10th car; 3 ducks give no held-out image
    assert sorted(train + val) == sorted(every) and len(every) == 15
    assert ImageFolder(tmp_path, "all").describe()["images"] == 15
    with pytest.raises(UnknownNameError, match="val"):
        ImageFolder(tmp_path, "test")


def test_mtfl_fixture(tmp_path):
    write_image(tmp_path / "lfw_5590" / "x.jpg", 20, 20)
    write_image(tmp_path / "AFLW" / "y.jpg", 15, 15)
    # x's first then y's; Windows path; later lines start with a space
    (tmp_path / "training.txt").write_text("lfw_5590\\x.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\n")
    (tmp_path / "testing.txt").write_text("AFLW/y.jpg 1.5 2 3 4 5 6 7 8 9 10 2 1 2 4\n \n")
    train = MTFL(tmp_path, "train")
    sample = train[0]
    np.testing.assert_array_equal(sample["points"], [[1, 6], [2, 7], [3, 8], [4, 9], [5, 10]])
    assert sample["valid"].all() and sample["category"] == "face"
    assert sample["attributes"] == {"gender": 1, "smile": 2, "glasses": 2, "pose": 3}
    assert sample["path"].endswith("lfw_5590/x.jpg") and sample["image"].shape == (20, 20, 3)
    test = open_image_dataset("mtfl", tmp_path, "test", load_images=False)
    assert len(test) == 1 and test[0]["points"][0, 0] == 1.5 and test[0]["shape"] == (15, 15)
    (tmp_path / "training.txt").write_text("lfw_5590\\x.jpg 1 2 3\n")
    with pytest.raises(DatasetError, match="line 1"):
        MTFL(tmp_path)


def test_cub_fixture(tmp_path):
    for name in ("Gull/0000.jpg", "Gull/0001.jpg", "Wren/0002.jpg"):
        write_image(tmp_path / "images" / name)
    (tmp_path / "images.txt").write_text("0, Gull/0000.jpg\n1, Gull/0001.jpg\n2, Wren/0002.jpg\n")
    (tmp_path / "image_class_labels.txt").write_text("0, 0\n1, 0\n2, 1\n")
    (tmp_path / "classes.txt").write_text("0, Gull\n1, Wren\n")
    (tmp_path / "train_test_split.txt").write_text("0, 1\n1, 0\n2, 1\n")
    dataset = CUBUnlabeled(tmp_path)
    assert len(dataset) == 3
    assert [(s["label"], s["category"]) for s in dataset] == [(0, "Gull"), (0, "Gull"), (1, "Wren")]
    train = CUBUnlabeled(tmp_path, "train")
    assert [s["path"].split("images/")[1] for s in train] == ["Gull/0000.jpg", "Wren/0002.jpg"]
    assert len(CUBUnlabeled(tmp_path, "test")) == 1
    (tmp_path / "images" / "Wren" / "0002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 files .*0002\.jpg"):
        CUBUnlabeled(tmp_path)


def test_registry_names():
    assert list(PAIR_DATASETS) == ["aflw-pairs", "caltech-101", "pairs-file", "pf-pascal", "pf-willow", "spair-71k",
                                   "stanfordextra", "tss"]  # fmt: skip  (registries list their names sorted)
    assert set(IMAGE_DATASETS) == {"image-folder", "mtfl", "cub-unlabeled"}
    with pytest.raises(UnknownNameError, match="pf-pascal, pf-willow") as error:
        open_dataset("pf-willo", "/nowhere")
    assert "\n" not in str(error.value)
    with pytest.raises(UnknownNameError, match="image-folder"):
        open_image_dataset("celeba", "/nowhere")


def test_center_crop_box_keeps_the_centred_fraction():
    assert center_crop_box(250, 250, 0.65) == (44, 44, 206, 206)  # round(162.5) = 162, (250 - 162) // 2 = 44
    assert center_crop_box(10, 20, 0.5) == (5, 2, 15, 7)
    assert center_crop_box(7, 9, 1.0) == (0, 0, 9, 7)
    with pytest.raises(DatasetError, match="crop fraction"):
        center_crop_box(10, 10, 0.0)


def test_center_cropped_mtfl_shifts_the_training_landmarks_and_links_the_test_split(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[10:12, 20:22] = 255  # the block the first landmark marks
    (tmp_path / "src" / "lfw_5590").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "src" / "lfw_5590" / "x.png")
    write_image(tmp_path / "src" / "AFLW" / "y.jpg", 15, 15)
    (tmp_path / "src" / "training.txt").write_text("lfw_5590\\x.png 20 2 3 4 5 10 7 8 9 10 1 2 2 3\n")
    (tmp_path / "src" / "testing.txt").write_text("AFLW/y.jpg 1.5 2 3 4 5 6 7 8 9 10 2 1 2 4\n")
    out = write_center_cropped_mtfl(tmp_path / "src", tmp_path / "out", 0.5, progress=False)
    train, test = MTFL(out, "train"), MTFL(out, "test")
    # box (10, 5, 30, 15): the image is 20 x 10 and every landmark moves by (-10, -5)
    assert train[0]["image"].shape[:2] == (10, 20)
    np.testing.assert_allclose(train[0]["points"][0], [10, 5])
    np.testing.assert_allclose(train[0]["points"][1:, 0], [-8, -7, -6, -5])
    assert train[0]["image"][5:7, 10:12].mean() > 150 > train[0]["image"][:3].mean()  # the block moved with its landmark
    assert train[0]["attributes"] == {"gender": 1, "smile": 2, "glasses": 2, "pose": 3}
    np.testing.assert_array_equal(test[0]["points"], MTFL(tmp_path / "src", "test")[0]["points"])
    assert test[0]["image"].shape[:2] == (15, 15)
