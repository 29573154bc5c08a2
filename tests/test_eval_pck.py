"""Golden tests for PCK: every expected number below is worked out by hand in the comments."""

import numpy as np
import pytest

from corrmark.errors import CorrmarkError, InvalidKeypointsError, UnknownNameError
from corrmark.eval import PCKAccumulator, PCKProtocol, evaluation_side, pck_per_pair, threshold_length

NAN = np.nan


def shifted(gt, offsets):
    """Predictions = ground truth moved along x by the given distances (so distance = |offset| exactly)."""
    pred = np.array(gt, dtype=float)
    pred[:, 0] += offsets
    return pred


# --- threshold lengths -------------------------------------------------------------------------------------------


def test_threshold_lengths_img_bbox_kpbbox():
    # img: max(H=480, W=640) = 640
    assert threshold_length("img", (480, 640)) == 640
    # bbox (x0, y0, x1, y1) = (10, 20, 110, 220): w = 100, h = 200 -> 200
    assert threshold_length("bbox", (480, 640), bbox=(10, 20, 110, 220)) == 200
    # kp-bbox of (0, 0), (30, 40), (10, 5): w = 30, h = 40 -> 40
    assert threshold_length("kp-bbox", (480, 640), points=[[0, 0], [30, 40], [10, 5]]) == 40


def test_kp_bbox_excludes_padded_keypoints():
    # Real keypoints (10, 10), (30, 10), (20, 40): box w = 20, h = 30 -> L = 30.
    # Published loaders pad to a fixed count with (-1, -1) and include the padding:
    # box x from -1 to 30 (w = 31), y from -1 to 40 (h = 41) -> L = 41 (the trap).
    padded = np.array([[10, 10], [30, 10], [20, 40], [-1, -1], [-1, -1]], dtype=float)
    real = np.array([True, True, True, False, False])
    assert threshold_length("kp-bbox", (100, 100), points=padded, valid=real) == 30
    assert threshold_length("kp-bbox", (100, 100), points=padded) == 41  # what the trap computes
    # NaN rows (how corrmark marks missing keypoints) are excluded even without a valid mask.
    with_nan = padded.copy()
    with_nan[3:] = NAN
    assert threshold_length("kp-bbox", (100, 100), points=with_nan) == 30


def test_padded_trap_changes_pck():
    # Same keypoints; prediction errors 0, 3.5, 5 on the three real ones.
    # Correct L = 30 -> PCK@0.1 threshold 3.0 -> only the 0 error is correct: 1/3.
    # Trap L = 41 -> threshold 4.1 -> errors 0 and 3.5 are correct: 2/3.
    gt = np.array([[10, 10], [30, 10], [20, 40], [-1, -1], [-1, -1]], dtype=float)
    valid = np.array([True, True, True, False, False])
    pred = shifted(gt, [0, 3.5, 5, 0, 0])
    accumulator = PCKAccumulator(PCKProtocol("s2t", "kp-bbox", "pair", alphas=(0.1,)))
    accumulator.add(pred, gt, valid, (100, 100))
    assert accumulator.result()["pck"]["0.1"] == pytest.approx(1 / 3)
    assert pck_per_pair(pred, gt, valid, 41, (0.1,)) == {0.1: (2, 3)}  # the inflated number


def test_threshold_errors():
    with pytest.raises(CorrmarkError, match="object box"):
        threshold_length("bbox", (10, 10))
    with pytest.raises(InvalidKeypointsError):
        threshold_length("kp-bbox", (10, 10), points=[[NAN, NAN]])
    with pytest.raises(UnknownNameError, match="img, bbox, kp-bbox"):
        threshold_length("diag", (10, 10))


# --- per-pair counts ---------------------------------------------------------------------------------------------


def test_thresholds_distinguished_and_boundary_counts():
    # L = 100; distances 4, 5, 9, 15, 16.
    # alpha 0.05 -> 5:  4, 5 (boundary)      -> 2/5
    # alpha 0.10 -> 10: 4, 5, 9              -> 3/5
    # alpha 0.15 -> 15: 4, 5, 9, 15 (bound.) -> 4/5
    gt = np.array([[50, 50], [60, 20], [10, 70], [30, 30], [80, 80]], dtype=float)
    pred = shifted(gt, [4, -5, 9, 15, -16])
    counts = pck_per_pair(pred, gt, np.ones(5, bool), 100.0)
    assert counts == {0.05: (2, 5), 0.1: (3, 5), 0.15: (4, 5)}


def test_diagonal_distance_and_nan_prediction():
    # Error (3, 4) has length 5: correct at alpha 0.05 with L = 100 (threshold 5).
    # A NaN prediction (the matcher gave up) is wrong; invalid keypoints are not counted.
    gt = np.array([[10, 10], [20, 20], [30, 30]], dtype=float)
    pred = np.array([[13, 14], [NAN, NAN], [0, 0]], dtype=float)
    counts = pck_per_pair(pred, gt, np.array([True, True, False]), 100.0, (0.05,))
    assert counts == {0.05: (1, 2)}


def test_predictions_for_valid_rows_only():
    # pred may hold one row per valid keypoint: same counts as the full form.
    gt = np.array([[0, 0], [10, 0], [20, 0]], dtype=float)
    valid = np.array([True, False, True])
    full = np.array([[1, 0], [99, 99], [30, 0]], dtype=float)  # errors 1 and 10 on the valid rows
    compact = full[valid]
    assert pck_per_pair(full, gt, valid, 100, (0.05,)) == pck_per_pair(compact, gt, valid, 100, (0.05,)) == {
        0.05: (1, 2)
    }
    with pytest.raises(InvalidKeypointsError, match="expected 3"):
        pck_per_pair(np.zeros((4, 2)), gt, valid, 100)


# --- averaging ---------------------------------------------------------------------------------------------------


def _two_pairs(averaging):
    # Pair A: 1 keypoint, correct (1/1). Pair B: 3 keypoints, 1 correct (1/3). L = img = 100, alpha 0.1 -> 10.
    accumulator = PCKAccumulator(PCKProtocol("s2t", "img", averaging, alphas=(0.1,)))
    gt_a = np.array([[10, 10]], dtype=float)
    accumulator.add(shifted(gt_a, [2]), gt_a, [True], (100, 100), category="a")
    gt_b = np.array([[10, 10], [20, 20], [30, 30]], dtype=float)
    accumulator.add(shifted(gt_b, [2, 50, 50]), gt_b, [True, True, True], (100, 100), category="b")
    return accumulator.result()


def test_pair_versus_keypoint_averaging():
    # per pair: (1 + 1/3) / 2 = 2/3; per keypoint: (1 + 1) / (1 + 3) = 0.5
    assert _two_pairs("pair")["pck"]["0.1"] == pytest.approx(2 / 3)
    assert _two_pairs("keypoint")["pck"]["0.1"] == pytest.approx(0.5)
    result = _two_pairs("keypoint")
    assert result["pairs"] == 2 and result["keypoints"] == 4 and result["skipped_pairs"] == 0


def test_overall_is_not_mean_of_categories():
    # Category a: two pairs, both 1/1 -> 1.0. Category b: one pair, 0/1 -> 0.0.
    # Over all pairs (pair averaging): (1 + 1 + 0) / 3 = 2/3; mean over categories: (1 + 0) / 2 = 0.5.
    accumulator = PCKAccumulator(PCKProtocol("s2t", "img", "pair", alphas=(0.1,)))
    gt = np.array([[10, 10]], dtype=float)
    accumulator.add(gt, gt, [True], (100, 100), category="a")
    accumulator.add(gt, gt, [True], (100, 100), category="a")
    accumulator.add(shifted(gt, [50]), gt, [True], (100, 100), category="b")
    result = accumulator.result()
    assert result["pck"]["0.1"] == pytest.approx(2 / 3)
    assert result["mean_over_categories"]["0.1"] == pytest.approx(0.5)
    assert result["per_category"] == {
        "a": {"0.1": 1.0, "pairs": 2, "keypoints": 2},
        "b": {"0.1": 0.0, "pairs": 1, "keypoints": 1},
    }


def test_pairs_without_valid_keypoints_are_skipped():
    accumulator = PCKAccumulator(PCKProtocol("s2t", "img", "pair", alphas=(0.1,)))
    gt = np.array([[10, 10], [20, 20]], dtype=float)
    assert accumulator.add(gt, gt, [False, False], (100, 100)) is None
    assert accumulator.add(gt, gt, [True, True], (100, 100)) == {"0.1": 1.0}
    result = accumulator.result()
    assert result["pairs"] == 1 and result["skipped_pairs"] == 1 and result["pck"]["0.1"] == 1.0


def test_empty_accumulator():
    result = PCKAccumulator(PCKProtocol("t2s", "img", "pair")).result()
    assert result["pck"] == {"0.05": None, "0.1": None, "0.15": None} and result["pairs"] == 0


# --- resolution --------------------------------------------------------------------------------------------------


def test_resolution_scales_non_square_image():
    # Reference image H = 100, W = 200; R = 50 scales x by 50/200 = 0.25 and y by 50/100 = 0.5.
    # gt (100, 50); pred A off by 10 px in x -> 2.5 after scaling; pred B off by 10 px in y -> 5 after scaling.
    # img length at R = 50: alpha 0.05 -> 2.5: A correct (boundary), B wrong -> 0.5; alpha 0.1 -> 5: both -> 1.0.
    # Original resolution: L = 200, alpha 0.05 -> 10: both correct (boundary) -> 1.0.
    gt = np.array([[100, 50], [100, 50]], dtype=float)
    pred = np.array([[110, 50], [100, 60]], dtype=float)
    at_50 = PCKAccumulator(PCKProtocol("s2t", "img", "pair", alphas=(0.05, 0.1), resolution=50))
    at_50.add(pred, gt, [True, True], (100, 200))
    assert at_50.result()["pck"] == {"0.05": 0.5, "0.1": 1.0}
    original = PCKAccumulator(PCKProtocol("s2t", "img", "pair", alphas=(0.05,)))
    original.add(pred, gt, [True, True], (100, 200))
    assert original.result()["pck"] == {"0.05": 1.0}


def test_resolution_scales_the_threshold_box():
    # bbox (20, 10, 120, 50): w = 100, h = 40 -> L = 100 originally.
    # At R = 50 on a 100 x 200 (H x W) image: w = 100 * 0.25 = 25, h = 40 * 0.5 = 20 -> L = 25.
    # Error 10 px in y -> 5 after scaling: alpha 0.2 -> 5 -> correct (boundary), alpha 0.1 -> 2.5 -> wrong.
    gt = np.array([[50, 20]], dtype=float)
    pred = np.array([[50, 30]], dtype=float)
    accumulator = PCKAccumulator(PCKProtocol("s2t", "bbox", "pair", alphas=(0.1, 0.2), resolution=50))
    accumulator.add(pred, gt, [True], (100, 200), bbox=(20, 10, 120, 50))
    assert accumulator.result()["pck"] == {"0.1": 0.0, "0.2": 1.0}
    # kp-bbox at R = 50: points (0, 0), (40, 20) -> scaled (0, 0), (10, 10) -> L = 10; errors 0, 0 -> all correct,
    # and an error of 4 px in x (1 after scaling) is correct at alpha 0.1 (threshold 1, boundary).
    gt = np.array([[0, 0], [40, 20]], dtype=float)
    accumulator = PCKAccumulator(PCKProtocol("s2t", "kp-bbox", "pair", alphas=(0.1,), resolution=50))
    accumulator.add(shifted(gt, [4, 0]), gt, [True, True], (100, 200))
    assert accumulator.result()["pck"] == {"0.1": 1.0}


# --- direction ---------------------------------------------------------------------------------------------------


def _sample():
    return {
        "category": "car",
        "source_image": np.zeros((100, 200, 3), np.uint8),  # H = 100, W = 200 -> img L = 200
        "target_image": np.zeros((300, 150, 3), np.uint8),  # H = 300, W = 150 -> img L = 300
        "source_shape": (100, 200),
        "target_shape": (300, 150),
        "source_points": np.array([[10.0, 10.0], [20.0, 20.0], [NAN, NAN]]),
        "target_points": np.array([[50.0, 60.0], [70.0, 80.0], [90.0, 90.0]]),
        "valid": np.array([True, True, False]),
        "source_bbox": np.array([0.0, 0.0, 40.0, 20.0]),  # L = 40
        "target_bbox": np.array([0.0, 0.0, 100.0, 60.0]),  # L = 100
    }


def test_evaluation_side_picks_query_and_reference():
    sample = _sample()
    s2t = evaluation_side(sample, "s2t")
    assert s2t["query_side"] == "source" and s2t["reference_side"] == "target"
    np.testing.assert_array_equal(s2t["query_points"], [[10, 10], [20, 20]])  # valid rows only
    np.testing.assert_array_equal(s2t["reference_points"], sample["target_points"])
    assert s2t["reference_shape"] == (300, 150) and s2t["query_image"] is sample["source_image"]
    t2s = evaluation_side(sample, "t2s")
    assert t2s["query_side"] == "target" and t2s["reference_side"] == "source"
    np.testing.assert_array_equal(t2s["query_points"], [[50, 60], [70, 80]])
    assert t2s["reference_shape"] == (100, 200) and t2s["reference_bbox"] is sample["source_bbox"]
    with pytest.raises(UnknownNameError):
        evaluation_side(sample, "both")


@pytest.mark.parametrize(
    "direction, threshold, expected",
    [
        # Every prediction is off by 12 px. s2t/img: L = 300 (target), alpha 0.05 -> 15 -> correct.
        ("s2t", "img", 1.0),
        # t2s/img: L = 200 (source), alpha 0.05 -> 10 -> wrong.
        ("t2s", "img", 0.0),
        # s2t/bbox: L = 100 (target box), alpha 0.05 -> 5 -> wrong; t2s/bbox: L = 40 -> 2 -> wrong.
        ("s2t", "bbox", 0.0),
        ("t2s", "bbox", 0.0),
    ],
)
def test_direction_takes_length_from_reference_side(direction, threshold, expected):
    sample = _sample()
    side = evaluation_side(sample, direction)
    pred = shifted(side["reference_points"][side["valid"]], [12, 12])
    accumulator = PCKAccumulator(PCKProtocol(direction, threshold, "pair", alphas=(0.05, 0.5)))
    accumulator.add(pred, side["reference_points"], side["valid"], side["reference_shape"], side["reference_bbox"])
    result = accumulator.result()
    assert result["pck"]["0.05"] == expected
    # alpha 0.5: t2s/bbox L = 40 -> 20 >= 12 -> correct; everything else is correct too.
    assert result["pck"]["0.5"] == 1.0
    assert result["protocol"]["direction"] == direction


# --- protocol ----------------------------------------------------------------------------------------------------


def test_protocol_to_dict_and_validation():
    protocol = PCKProtocol(direction="t2s", threshold="kp-bbox", averaging="keypoint", alphas=[0.1], resolution=256)
    assert protocol.to_dict() == {
        "direction": "t2s",
        "threshold": "kp-bbox",
        "averaging": "keypoint",
        "alphas": [0.1],
        "resolution": 256,
    }
    assert PCKProtocol.from_dict(protocol.to_dict()) == protocol
    defaults = PCKProtocol("s2t", "bbox", "pair").to_dict()
    assert defaults["alphas"] == [0.05, 0.1, 0.15] and defaults["resolution"] == "original"
    with pytest.raises(TypeError):
        PCKProtocol()  # direction, threshold and averaging must be stated
    with pytest.raises(UnknownNameError, match="t2s, s2t"):
        PCKProtocol("forward", "img", "pair")
    with pytest.raises(UnknownNameError, match="pair, keypoint"):
        PCKProtocol("s2t", "img", "image")
    with pytest.raises(CorrmarkError, match="resolution"):
        PCKProtocol("s2t", "img", "pair", resolution=0)
    with pytest.raises(CorrmarkError, match="resolution"):
        PCKProtocol("s2t", "img", "pair", resolution="240")
    with pytest.raises(CorrmarkError, match="alphas"):
        PCKProtocol("s2t", "img", "pair", alphas=(0.1, -0.05))
    with pytest.raises(CorrmarkError, match="PCKProtocol"):
        PCKAccumulator({"direction": "s2t"})


def test_bbox_protocol_without_box_is_an_error():
    accumulator = PCKAccumulator(PCKProtocol("s2t", "bbox", "pair"))
    with pytest.raises(CorrmarkError, match="object box"):
        accumulator.add([[0, 0]], [[0, 0]], [True], (10, 10))
