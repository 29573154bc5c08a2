"""Golden tests for the mask-transfer metrics (values worked out by hand in the comments)."""

import numpy as np
import pytest

from corrmark.errors import CorrmarkError
from corrmark.eval import MaskAccumulator, label_transfer_accuracy, mask_iou

# pred            gt
# 1 1 0 0         1 0 0 0
# 0 0 0 0         1 0 0 0
PRED = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
GT = np.array([[1, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)


def test_label_transfer_accuracy_golden():
    # Disagreements at (0, 1) and (1, 0): 6 of 8 pixels agree -> 0.75
    assert label_transfer_accuracy(PRED, GT) == 0.75


def test_mask_iou_golden():
    # intersection {(0, 0)} = 1; union {(0, 0), (0, 1), (1, 0)} = 3 -> 1/3
    assert mask_iou(PRED, GT) == pytest.approx(1 / 3)


def test_empty_masks():
    empty = np.zeros((3, 3), bool)
    assert mask_iou(empty, empty) == 1.0  # documented: nothing to disagree about
    assert label_transfer_accuracy(empty, empty) == 1.0
    full = np.ones((3, 3), bool)
    assert mask_iou(empty, full) == 0.0 and label_transfer_accuracy(empty, full) == 0.0


def test_region_and_non_bool_inputs():
    # Only the first column counts: (0, 0) agrees, (1, 0) does not -> 0.5
    region = np.zeros((2, 4), bool)
    region[:, 0] = True
    assert label_transfer_accuracy(PRED, GT, region=region) == 0.5
    # probabilities and 0/255 masks are binarised with > 0.5
    assert label_transfer_accuracy(PRED * 0.9, GT.astype(np.uint8) * 255) == 0.75
    with pytest.raises(CorrmarkError, match="region is empty"):
        label_transfer_accuracy(PRED, GT, region=np.zeros((2, 4), bool))


def test_shape_mismatch():
    with pytest.raises(CorrmarkError, match="shapes differ"):
        mask_iou(np.zeros((2, 3), bool), np.zeros((3, 2), bool))
    with pytest.raises(CorrmarkError, match="2-D"):
        mask_iou(np.zeros((2, 3, 1), bool), np.zeros((2, 3, 1), bool))


def test_mask_accumulator():
    # pair 1 (cat a): LT-ACC 0.75, IoU 1/3; pair 2 (cat a): 1.0, 1.0; pair 3 (cat b): 0.0, 0.0
    # all pairs: LT-ACC (0.75 + 1 + 0) / 3 = 0.58333, IoU (1/3 + 1 + 0) / 3 = 4/9
    # categories: a -> LT-ACC 0.875, IoU 2/3; b -> 0, 0; mean over categories: 0.4375, 1/3
    accumulator = MaskAccumulator()
    assert accumulator.add(PRED, GT, "a") == {"lt_acc": 0.75, "iou": pytest.approx(1 / 3)}
    accumulator.add(GT, GT, "a")
    accumulator.add(np.zeros((2, 2), bool), np.ones((2, 2), bool), "b")
    result = accumulator.result()
    assert result["lt_acc"] == pytest.approx(1.75 / 3) and result["iou"] == pytest.approx(4 / 9)
    assert result["pairs"] == 3
    assert result["per_category"]["a"] == {"lt_acc": 0.875, "iou": pytest.approx(2 / 3), "pairs": 2}
    assert result["mean_over_categories"] == {"lt_acc": 0.4375, "iou": pytest.approx(1 / 3)}
