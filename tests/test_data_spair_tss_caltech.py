"""SPair-71k, TSS and Caltech-101 loaders on tiny fixtures written in the published formats."""

import csv
import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from corrmark.data import TSS, Caltech101, SPair71k, flow_to_mapping, open_dataset, read_flo, write_flo
from corrmark.data.caltech import polygon_to_mask
from corrmark.errors import DatasetError, UnknownNameError


def write_image(path, height, width, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


def write_mask(path, mask):
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


# --- SPair-71k ---------------------------------------------------------------------------------------------------

PAIR_NAME = "000001-2008_000585-2008_003661:cat"
ANNOTATION = {
    "src_imname": "2008_000585.jpg",
    "trg_imname": "2008_003661.jpg",
    "category": "cat",
    "src_kps": [[3, 4], [10, 12]],
    "trg_kps": [[20, 5], [0, 0]],
    "src_bndbox": [1, 2, 30, 25],
    "trg_bndbox": [0, 1, 35, 20],
    "viewpoint_variation": 2,
    "scale_variation": 1,
    "truncation": 0,
    "occlusion": 1,
    "mirror": 0,
    "kps_ids": [3, 7],
}


@pytest.fixture
def spair_root(tmp_path):
    (tmp_path / "Layout" / "large").mkdir(parents=True)
    (tmp_path / "Layout" / "large" / "test.txt").write_text(PAIR_NAME + "\n")
    (tmp_path / "PairAnnotation" / "test").mkdir(parents=True)
    (tmp_path / "PairAnnotation" / "test" / f"{PAIR_NAME}.json").write_text(json.dumps(ANNOTATION))
    write_image(tmp_path / "JPEGImages" / "cat" / "2008_000585.jpg", 30, 40)
    write_image(tmp_path / "JPEGImages" / "cat" / "2008_003661.jpg", 25, 36)
    return tmp_path


def test_spair_fixture(spair_root):
    dataset = open_dataset("spair-71k", spair_root, "test")
    assert len(dataset) == 1 and dataset.describe()["layout"] == "large"
    sample = dataset[0]
    assert sample["pair_id"] == PAIR_NAME and sample["category"] == "cat"
    np.testing.assert_array_equal(sample["source_points"], ANNOTATION["src_kps"])  # already 0-based
    np.testing.assert_array_equal(sample["target_points"], ANNOTATION["trg_kps"])
    np.testing.assert_array_equal(sample["source_bbox"], [1, 2, 30, 25])
    np.testing.assert_array_equal(sample["target_bbox"], [0, 1, 35, 20])
    assert sample["valid"].tolist() == [True, True]
    assert sample["flags"] == {k: ANNOTATION[k] for k in ("viewpoint_variation", "scale_variation", "truncation",
                                                          "occlusion", "mirror", "kps_ids")}  # fmt: skip
    assert sample["source_image"].shape == (30, 40, 3) and sample["target_shape"] == (25, 36)


def test_spair_errors(spair_root):
    with pytest.raises(DatasetError, match="val.txt"):
        SPair71k(spair_root, "val")
    with pytest.raises(UnknownNameError):
        SPair71k(spair_root, layout="medium")
    (spair_root / "PairAnnotation" / "test" / f"{PAIR_NAME}.json").unlink()
    with pytest.raises(DatasetError, match="1 of 1 files .*000001-2008_000585"):
        SPair71k(spair_root)


# --- TSS and .flo ------------------------------------------------------------------------------------------------


def test_flo_round_trip_and_unknown(tmp_path):
    flow = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    flow[1, 2] = np.nan  # written as 1e10 (unknown), read back as NaN
    write_flo(tmp_path / "f.flo", flow)
    raw = (tmp_path / "f.flo").read_bytes()
    assert raw[:4] == b"PIEH"  # 202021.25 as little-endian float32
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [3, 2]  # width, height
    assert np.frombuffer(raw[12:20], "<f4").tolist() == [0.0, 1.0]  # u, v of pixel (0, 0)
    back = read_flo(tmp_path / "f.flo")
    np.testing.assert_array_equal(back, flow)
    assert read_flo(tmp_path / "f.flo", unknown_to_nan=False)[1, 2, 0] == np.float32(1e10)
    (tmp_path / "bad.flo").write_bytes(b"XXXX" + raw[4:])
    with pytest.raises(DatasetError, match="magic"):
        read_flo(tmp_path / "bad.flo")
    (tmp_path / "short.flo").write_bytes(raw[:-4])
    with pytest.raises(DatasetError, match="expected"):
        read_flo(tmp_path / "short.flo")


def test_flow_to_mapping():
    flow = np.zeros((2, 3, 2), np.float32)
    flow[1, 2] = (0.5, -1.0)
    mapping = flow_to_mapping(flow)
    np.testing.assert_array_equal(mapping[0, 1], [1, 0])  # (x, y) of pixel row 0, column 1
    np.testing.assert_array_equal(mapping[1, 2], [2.5, 0])


@pytest.fixture
def tss_root(tmp_path):
    folder = tmp_path / "FG3DCar" / "pair001"
    write_image(folder / "image1.png", 4, 5, value=1)
    write_image(folder / "image2.png", 3, 6, value=2)
    flow1 = np.full((4, 5, 2), 1.0, np.float32)  # on image1's grid, pointing into image2
    flow2 = np.full((3, 6, 2), -2.0, np.float32)  # on image2's grid, pointing into image1
    flow2[0, 0] = np.nan
    write_flo(folder / "flow1.flo", flow1)
    write_flo(folder / "flow2.flo", flow2)
    mask1 = np.zeros((4, 5), bool)
    mask1[1:3, 1:4] = True
    write_mask(folder / "mask1.png", mask1)
    write_mask(folder / "mask2.png", np.ones((3, 6), bool))
    (folder / "flip_gt.txt").write_text("1\n")
    return tmp_path


def test_tss_fixture(tss_root):
    dataset = open_dataset("tss", tss_root)
    assert len(dataset) == 2  # both directions
    forward, backward = dataset[0], dataset[1]
    assert forward["pair_id"] == "FG3DCar/pair001:1->2" and backward["pair_id"] == "FG3DCar/pair001:2->1"
    assert forward["category"] == "FG3DCar"
    assert forward["flags"]["flip"] is True and forward["flags"]["source_index"] == 1
    assert forward["source_image"][0, 0, 0] == 1 and forward["target_image"].shape == (3, 6, 3)
    assert forward["source_mask"].sum() == 6 and forward["target_mask"].all()
    # source = image1, target = image2: target-to-source flow is flow2 (on image2's grid)
    assert forward["flow_target_to_source"].shape == (3, 6, 2)
    assert np.isnan(forward["flow_target_to_source"][0, 0]).all()
    assert forward["flow_target_to_source"][1, 1, 0] == -2.0
    assert (forward["flow_source_to_target"] == 1.0).all()
    # reversed pair swaps everything
    assert backward["source_shape"] == (3, 6) and backward["flow_target_to_source"].shape == (4, 5, 2)
    assert backward["target_mask"].sum() == 6
    assert forward["source_points"].shape == (0, 2) and forward["valid"].shape == (0,)
    assert len(TSS(tss_root, both_directions=False)) == 1


def test_tss_groups_and_missing_files(tss_root):
    with pytest.raises(DatasetError, match="no pair folder"):
        TSS(tss_root, groups=("JODS",))
    (tss_root / "FG3DCar" / "pair001" / "flow2.flo").unlink()
    with pytest.raises(DatasetError, match=r"1 of 6 files .*flow2\.flo"):
        TSS(tss_root)


# --- Caltech-101 -------------------------------------------------------------------------------------------------

# A rectangle with 1-based corners x in {3, 8}, y in {2, 6} -> 0-based x 2..7, y 1..5 -> 6 x 5 = 30 pixels.
EXPECTED_MASK = np.zeros((10, 12), bool)
EXPECTED_MASK[1:6, 2:8] = True


def test_polygon_to_mask_golden():
    square = np.array([[2, 1], [7, 1], [7, 5], [2, 5]], float)
    np.testing.assert_array_equal(polygon_to_mask(square, (10, 12)), EXPECTED_MASK)
    assert not polygon_to_mask(np.zeros((2, 2)), (3, 3)).any()  # degenerate outline: empty mask


def _caltech_images(root):
    for name in ("image_0001.jpg", "image_0002.jpg"):
        write_image(root / "101_ObjectCategories" / "Faces" / name, 10, 12)


def test_caltech_polygons_in_csv(tmp_path):
    _caltech_images(tmp_path)
    with open(tmp_path / "test_pairs_caltech_with_category.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_image", "target_image", "class", "XA", "YA", "XB", "YB"])
        writer.writerow(["101_ObjectCategories/Faces/image_0001.jpg", "101_ObjectCategories/Faces/image_0002.jpg",
                         "1", "3,8,8,3", "2,2,6,6", "1,12,1", "1,1,10"])  # fmt: skip
    dataset = Caltech101(tmp_path)
    sample = dataset[0]
    assert sample["category"] == "Faces" and sample["pair_id"] == "Faces/image_0001->image_0002#0"
    np.testing.assert_array_equal(sample["source_polygon"], [[2, 1], [7, 1], [7, 5], [2, 5]])
    np.testing.assert_array_equal(sample["source_mask"], EXPECTED_MASK)
    # triangle (0, 0), (11, 0), (0, 9): the corner pixels are in, the opposite corner is out
    assert sample["target_mask"][0, 0] and sample["target_mask"][0, 11] and not sample["target_mask"][9, 11]
    assert sample["source_bbox"] is None and sample["source_points"].shape == (0, 2)
    assert sample["source_image"].shape == (10, 12, 3)


def test_caltech_mat_annotations(tmp_path):
    _caltech_images(tmp_path)
    annotations = tmp_path / "Annotations" / "Faces_2"  # the Faces class uses the Faces_2 annotation folder
    annotations.mkdir(parents=True)
    # box_coord = [top, bottom, left, right]; contour relative to (left, top): absolute x 3..8, y 2..6 (1-based)
    for name in ("annotation_0001.mat", "annotation_0002.mat"):
        contour = np.array([[0, 5, 5, 0], [0, 0, 4, 4]], float)
        scipy.io.savemat(annotations / name, {"box_coord": np.array([[2, 6, 3, 8]]), "obj_contour": contour})
    with open(tmp_path / "test_pairs_caltech_with_category.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_image", "target_image", "class"])
        writer.writerow(["101_ObjectCategories/Faces/image_0001.jpg", "101_ObjectCategories/Faces/image_0002.jpg", "1"])
    sample = open_dataset("caltech-101", tmp_path)[0]
    np.testing.assert_array_equal(sample["source_mask"], EXPECTED_MASK)
    np.testing.assert_array_equal(sample["target_mask"], EXPECTED_MASK)
    np.testing.assert_array_equal(sample["source_bbox"], [2, 1, 7, 5])  # [left, top, right, bottom] - 1
    (annotations / "annotation_0002.mat").unlink()
    with pytest.raises(DatasetError, match=r"1 of 4 files .*annotation_0002\.mat"):
        Caltech101(tmp_path)
