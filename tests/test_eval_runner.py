"""The evaluation runner with matchers whose answers are known: an oracle, a fixed offset, a transposing bug."""

import numpy as np
import pytest

from corrmark.data import open_dataset
from corrmark.data.subset import Subset
from corrmark.eval import PCKProtocol
from corrmark.eval.runner import evaluate_matcher, format_pck_table
from corrmark.models import Matcher


class OracleMatcher(Matcher):
    """Looks the answer up in the dataset (by image content), optionally adds a fixed offset."""

    name = "oracle"

    def __init__(self, dataset, offset=(0.0, 0.0)):
        self.offset = np.asarray(offset)
        self.lookup = {}
        for index in range(len(dataset)):
            sample = dataset[index]
            key = (sample["source_image"].tobytes(), sample["target_image"].tobytes())
            self.lookup[key] = (sample["source_points"], sample["target_points"])
            self.lookup[key[::-1]] = (sample["target_points"], sample["source_points"])

    def estimate_mapping(self, source, target):
        raise NotImplementedError

    def transfer_keypoints(self, source, target, points):
        known_source, known_target = self.lookup[(source.tobytes(), target.tobytes())]
        rows = [np.flatnonzero(np.all(np.isclose(known_source, p), axis=1))[0] for p in points]
        return known_target[rows] + self.offset


@pytest.fixture(scope="module")
def willow(shared_data):
    dataset = open_dataset("pf-willow", shared_data / "pf-willow")
    return Subset(dataset, [0, 1, 100, 101])  # two car(G) pairs, two car(M) pairs


@pytest.mark.parametrize("direction", ["s2t", "t2s"])
def test_oracle_scores_one_in_both_directions(willow, direction):
    protocol = PCKProtocol(direction=direction, threshold="kp-bbox", averaging="pair")
    result = evaluate_matcher(OracleMatcher(willow), willow, protocol, progress=False)
    assert result["pck"] == {"0.05": 1.0, "0.1": 1.0, "0.15": 1.0}
    assert result["pairs"] == 4 and result["keypoints"] == 40
    assert set(result["per_category"]) == {"car(G)", "car(M)"}
    assert result["protocol"]["direction"] == direction and result["dataset"] == "pf-willow"
    assert result["matcher"] == {"name": "oracle"}


def test_fixed_offset_is_scored_against_the_reference_keypoint_box(willow):
    # Every prediction is 12 px off. Pair-averaged PCK@alpha is 1 where 12 <= alpha * L (kp-bbox of the reference).
    protocol = PCKProtocol(direction="s2t", threshold="kp-bbox", averaging="pair")
    result = evaluate_matcher(OracleMatcher(willow, offset=(12.0, 0.0)), willow, protocol, progress=False)
    lengths = []
    for index in range(len(willow)):
        points = willow[index]["target_points"]
        lengths.append(max(np.ptp(points[:, 0]), np.ptp(points[:, 1])))
    for alpha in (0.05, 0.1, 0.15):
        expected = np.mean([12.0 <= alpha * length for length in lengths])
        assert result["pck"][str(alpha)] == pytest.approx(expected)
    assert 0 < result["pck"]["0.1"] <= 1 and result["pck"]["0.05"] < 1  # the offset must matter at some alpha


def test_limit_and_table(willow):
    protocol = PCKProtocol(direction="t2s", threshold="kp-bbox", averaging="keypoint")
    result = evaluate_matcher(OracleMatcher(willow), willow, protocol, limit=2, progress=False)
    assert result["pairs"] == 2 and result["limit"] == 2
    table = format_pck_table(result)
    assert "car(G)" in table and "all" in table and "averaging=keypoint" in table and "1.0000" in table
