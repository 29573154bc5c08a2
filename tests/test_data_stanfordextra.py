"""COCO RLE decoding (hand-made golden strings) and the StanfordExtra loader (fixture and the shared sample)."""

import json

import numpy as np
import pytest
from PIL import Image

from corrmark.data import StanfordExtra, decode_rle, encode_rle, open_dataset
from corrmark.data.rle import decode_counts_string, encode_counts_string
from corrmark.errors import DatasetError

from conftest import shared_path


# --- RLE golden cases, encoded by hand ---------------------------------------------------------------------------


def test_rle_small_counts():
    # "234": runs 2 (bg), 3 (fg), 4 (bg) over a 3x3 mask in column-major order:
    # flat indices 2, 3, 4 are foreground -> (row 2, col 0), (row 0, col 1), (row 1, col 1)
    expected = np.zeros((3, 3), bool)
    expected[2, 0] = expected[0, 1] = expected[1, 1] = True
    np.testing.assert_array_equal(decode_rle("234", 3, 3), expected)
    assert encode_rle(expected) == "234"


def test_rle_delta_coding():
    # runs [1, 1, 1, 3] on 2x3: the 4th run is stored as 3 - runs[1] = 2 -> "1112"
    assert decode_counts_string("1112") == [1, 1, 1, 3]
    # runs [1, 5, 1, 2] on 3x3: the 4th is stored as 2 - 5 = -3: 5-bit group 29 (0b11101, sign bit 0x10 set,
    # no continuation) -> chr(48 + 29) = "M"
    assert decode_counts_string("151M") == [1, 5, 1, 2]
    assert encode_counts_string([1, 5, 1, 2]) == "151M"
    mask = decode_rle("151M", 3, 3)
    # column-major flat: 0 bg | 1..5 fg | 6 bg | 7, 8 fg
    expected_flat = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1], bool)
    np.testing.assert_array_equal(mask.T.reshape(-1), expected_flat)


def test_rle_multi_character_run():
    # run 100 = 0b11_00100: groups 4 (with continuation 0x20 -> 36) and 3 -> chr(84) + chr(51) = "T3"
    assert encode_counts_string([100]) == "T3"
    assert decode_counts_string("T3") == [100]
    assert decode_rle("T3", 10, 10).sum() == 0


def test_rle_round_trip_random_and_errors():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (40, 33)]:
        mask = rng.random(shape) < 0.3
        mask[0, 0] = True  # starts with foreground: the encoding begins with a 0-length run
        assert decode_rle(encode_rle(mask), *shape).tolist() == mask.tolist()
    assert decode_rle([0, 2, 2], 2, 2).tolist() == [[True, False], [True, False]]  # uncompressed runs
    with pytest.raises(DatasetError, match="expected 3x4"):
        decode_rle("234", 3, 4)


# --- StanfordExtra fixture ---------------------------------------------------------------------------------------


def _record(folder, name, height, width, visible, mask):
    joints = [[float(k), float(k + 1), 1.0 if v else 0.0] if v else [0.0, 0.0, 0.0] for k, v in enumerate(visible)]
    return {"img_path": f"{folder}/{name}.jpg", "img_width": width, "img_height": height, "joints": joints,
            "img_bbox": [1, 2, 5, 4], "is_multiple_dogs": False, "seg": encode_rle(mask)}  # fmt: skip


@pytest.fixture
def extra_root(tmp_path):
    masks = []
    records = []
    specs = [("n1-Beagle", "a", [1, 1, 0]), ("n1-Beagle", "b", [1, 0, 1]), ("n2-Pug", "c", [1, 1, 1])]
    for k, (folder, name, visible) in enumerate(specs):
        mask = np.zeros((8, 10), bool)
        mask[k : k + 3, 2:6] = True
        masks.append(mask)
        records.append(_record(folder, name, 8, 10, visible, mask))
        (tmp_path / "sample_imgs" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "sample_imgs" / folder / f"{name}.jpg")
    (tmp_path / "StanfordExtra_sample.json").write_text(json.dumps(records))
    return tmp_path, masks


def test_stanfordextra_fixture(extra_root):
    root, masks = extra_root
    dataset = open_dataset("stanfordextra", root)
    assert len(dataset) == 6  # 3 images -> 3 * 2 ordered pairs
    sample = dataset[0]  # a -> b
    assert sample["pair_id"] == "a->b" and sample["category"] == "dog"
    assert sample["flags"] == {"source_breed": "Beagle", "target_breed": "Beagle", "same_breed": True,
                               "multiple_dogs": False}  # fmt: skip
    np.testing.assert_array_equal(sample["source_points"], [[0, 1], [1, 2], [np.nan, np.nan]])
    np.testing.assert_array_equal(sample["target_points"], [[0, 1], [np.nan, np.nan], [2, 3]])
    assert sample["valid"].tolist() == [True, False, False]  # visible in both
    np.testing.assert_array_equal(sample["source_bbox"], [1, 2, 6, 6])  # [x, y, w, h] -> [x0, y0, x1, y1]
    np.testing.assert_array_equal(sample["source_mask"], masks[0])
    np.testing.assert_array_equal(sample["target_mask"], masks[1])
    assert sample["source_image"].shape == (8, 10, 3)
    same = StanfordExtra(root, same_breed_only=True)
    assert [s["pair_id"] for s in same] == ["a->b", "b->a"]


def test_stanfordextra_errors(extra_root, tmp_path_factory):
    root, _ = extra_root
    (root / "sample_imgs" / "n2-Pug" / "c.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 files .*c\.jpg"):
        StanfordExtra(root)
    with pytest.raises(DatasetError, match="StanfordExtra\\*.json"):
        StanfordExtra(tmp_path_factory.mktemp("nothing"))


# --- the shared sample (real data) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_extra():
    return StanfordExtra(shared_path("stanfordextra-sample"), load_images=False)


def test_real_stanfordextra_pairs(shared_extra):
    assert len(shared_extra) == 600  # 25 images x 24 others
    assert len(shared_extra.images) == 25
    for sample in shared_extra[:30]:
        assert sample["source_points"].shape == (24, 2)
        visible_both = np.isfinite(sample["source_points"]).all(1) & np.isfinite(sample["target_points"]).all(1)
        assert (sample["valid"] == visible_both).all()  # every visible joint lies on its image
    breeds = {image["breed"] for image in shared_extra.images}
    assert breeds == {"Rhodesian_ridgeback", "Weimaraner", "Border_terrier", "golden_retriever"}


def test_real_stanfordextra_masks(shared_extra):
    for index, image in enumerate(shared_extra.images):
        mask = shared_extra.mask(index)
        height, width = image["shape"]
        assert mask.shape == (height, width)
        assert 0.05 < mask.mean() < 0.6  # a dog silhouette, neither empty nor the whole image
        x0, y0, x1, y1 = image["bbox"]
        ys, xs = np.nonzero(mask)
        inside = (xs >= x0 - 1) & (xs <= x1 + 1) & (ys >= y0 - 1) & (ys <= y1 + 1)
        assert inside.mean() > 0.97  # the silhouette lies in its box (annotations overlap it by a few pixels)
        # the decoder is exact: re-encoding reproduces the stored string
        assert encode_rle(mask) == image["seg"]
    sample = shared_extra[0]
    assert sample["source_mask"].shape == sample["source_shape"]
