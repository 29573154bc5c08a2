"""What `corrmark eval` / `eval-landmarks` gained so that every headline row is one command: the AFLW face pairs with
the inter-ocular PCK (SCorrSAN faces), `--breeds` (StanfordExtra folds), `--every` (stratified subsets),
`--fit-config` (the JLAD rows' regression faces), `--equivariance` / `cub` (the equivariance rows), and the record
each writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from corrmark.cli import main
from corrmark.data import open_dataset, open_image_dataset
from corrmark.data.keypoint_pairs import FacePairs
from corrmark.data.sources import collect_source_images
from corrmark.eval import PCKProtocol
from corrmark.eval.interocular import interocular_distance
from corrmark.eval.landmarks import equivariance_images, evaluate_landmarks
from corrmark.eval.records import RESULT_SCHEMA_VERSION
from corrmark.eval.runner import evaluate_matcher
from corrmark.models import Matcher
from corrmark.train import c3

REPO = Path(__file__).resolve().parents[1]
SMALL_NN = ["--matcher", "nn", "--backbone", "efficientnet_lite0", "--image-size", "96", "--quiet"]


class ShiftedTruth(Matcher):
    """Answers each face pair with the true target points shifted by ``offset`` pixels."""

    name = "shifted-truth"

    def __init__(self, dataset, offset):
        self.truth = {(sample["source_path"], sample["target_path"]): sample for sample in
                      (dataset[index] for index in range(len(dataset)))}
        self.offset = np.asarray(offset, dtype=np.float64)

    def estimate_mapping(self, source, target):
        raise NotImplementedError

    def transfer_keypoints(self, source, target, points):
        for sample in self.truth.values():  # t2s: the query is the target image, the answer the source points
            if np.array_equal(sample["target_points"], points):
                return sample["source_points"] + self.offset
        raise AssertionError("unknown query")


@pytest.fixture(scope="module")
def faces(shared_data):
    return open_dataset("aflw-pairs", shared_data / "mtfl", count=6, seed=2)


def test_aflw_pairs_is_the_scorrsan_face_list(shared_data, faces):
    reference = FacePairs(shared_data / "mtfl", 6, 2, load_images=False)
    assert [faces[index]["pair_id"] for index in range(len(faces))] == [
        reference[index]["pair_id"] for index in range(len(reference))]
    assert faces.describe()["faces"] == 6 and faces.name == "aflw-pairs"


def test_inter_ocular_pck_beside_kp_bbox(faces):
    offset = (4.0, 0.0)
    protocol = PCKProtocol("t2s", "kp-bbox", "pair", (0.05, 0.1, 0.15))
    result = evaluate_matcher(ShiftedTruth(faces, offset), faces, protocol, progress=False, eyes=(0, 1))
    distances = np.array([interocular_distance(faces[index]["source_points"]) for index in range(len(faces))])
    for alpha in (0.05, 0.1, 0.15):  # every point is 4 px off: a pair scores 1 where 4 <= alpha * IOD, else 0
        assert result["inter-ocular"]["pck"][str(alpha)] == pytest.approx(np.mean(4.0 <= alpha * distances))
    assert result["inter-ocular"]["pairs"] == 6 and result["inter-ocular"]["protocol"]["threshold"] == "inter-ocular"
    plain = evaluate_matcher(ShiftedTruth(faces, offset), faces, protocol, progress=False)
    assert "inter-ocular" not in plain and plain["pck"] == result["pck"], "the kp-bbox numbers do not change"


def test_eval_every_kth_pair_and_the_record(shared_data, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    assert main(["eval", "pf-willow", "--root", str(shared_data / "pf-willow"), "--every", "300", *SMALL_NN,
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["pairs"] + record["skipped_pairs"] == 3 and record["dataset_info"]["subset_size"] == 3
    assert record["schema_version"] == RESULT_SCHEMA_VERSION and record["experiment"]["every"] == 300
    assert record["model"] == {"name": "nn", "checkpoint": None, "options": record["experiment"]["matcher"]["options"]}
    assert record["config"] is None and record["protocol"]["threshold"] == "kp-bbox"
    assert record["matcher"]["backbone"] == "efficientnet_lite0" and "machine" in record
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the table scripts read such records as before
    import make_table
    import scorrsan_table

    assert make_table.row(out).startswith(f"| r | t2s | {record['pairs']} | ")
    assert scorrsan_table.row(out, faces=False).startswith(f"| r | {record['pairs']} | ")


def test_eval_faces_and_one_breed(shared_data, tmp_path):
    out = tmp_path / "faces.json"
    assert main(["eval", "aflw-pairs", "--root", str(shared_data / "mtfl"), "--eyes", "0,1", "--limit", "2", *SMALL_NN,
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["pairs"] == 2 and record["inter-ocular"]["pairs"] == 2 and record["experiment"]["eyes"] == [0, 1]
    root = shared_data / "stanfordextra-sample"
    breed = open_dataset("stanfordextra", root, load_images=False).images[0]["breed"]
    dogs = len(open_dataset("stanfordextra", root, breeds=[breed], load_images=False).images)
    out = tmp_path / "dogs.json"
    assert main(["eval", "stanfordextra", "--root", str(root), "--breeds", breed, *SMALL_NN, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["pairs"] + record["skipped_pairs"] == dogs * (dogs - 1)
    assert record["dataset_info"]["breeds"] == [breed]
    assert record["experiment"]["dataset_options"] == {"breeds": [breed]}


@pytest.fixture(scope="module")
def tiny_c3(tmp_path_factory):
    from corrmark.models.c3 import C3Net
    from corrmark.train.checkpoint import save_checkpoint

    model = {"image_size": 32, "num_landmarks": 3, "pose_channels": 4, "appearance_channels": 8,
             "generator_channels": 16, "flow_channels": 8}
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("c3") / "c3.pt"
    return save_checkpoint(path, {"model": C3Net(model).state_dict(), "config": {"method": "c3", "model": model}})


def test_fit_config_fits_on_exactly_the_configs_training_faces(shared_data, tiny_c3, tmp_path):
    sources = [{"dataset": "mtfl", "root": str(shared_data / "mtfl"), "split": "train", "limit": 6}]
    config = tmp_path / "c3_tiny.yaml"
    config.write_text(yaml.safe_dump({"method": "c3", "data": {"sources": sources, "data_seed": 3}}))
    out = tmp_path / "fit.json"
    assert main(["eval-landmarks", "mtfl", "--root", str(shared_data / "mtfl"), "--fit-config", str(config),
                 "--checkpoint", str(tiny_c3), "--test-limit", "4", "--quiet", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["train_images"] == 6 and record["test_images"] == 4 and record["config"] == str(config)
    assert record["model"]["name"] == "c3" and record["model"]["checkpoint"] == str(tiny_c3)
    assert record["schema_version"] == RESULT_SCHEMA_VERSION and record["protocol"]["normalisation"] == "inter-ocular"

    from corrmark.cli.commands_landmarks import config_fit_images

    fit = config_fit_images(config)
    expected = [image.path for image in collect_source_images(sources, 3, c3.SOURCE_RULES)]  # C3's own subset rule
    assert [fit[index]["path"] for index in range(len(fit))] == expected
    train = open_image_dataset("mtfl", shared_data / "mtfl", "train")
    mtfl = {str(record["path"]): record for record in train._records}
    assert all(np.array_equal(fit[index]["points"], mtfl[expected[index]]["points"]) for index in range(len(fit)))


def test_fit_config_of_a_matcher_is_one_line(tiny_c3, tmp_path, capsys):
    config = tmp_path / "sfnet.yaml"
    config.write_text("method: sfnet\n")
    assert main(["eval-landmarks", "mtfl", "--root", str(tmp_path), "--fit-config", str(config),
                 "--checkpoint", str(tiny_c3)]) == 2
    error = capsys.readouterr().err.strip()
    assert "--fit-config takes a" in error and "jlad" in error and "trains 'sfnet'" in error and "\n" not in error


def test_equivariance_rows_on_seeded_test_images(shared_data, tiny_c3, tmp_path):
    test = open_image_dataset("mtfl", shared_data / "mtfl", "test", load_images=False)
    chosen = equivariance_images(test, 3)
    assert chosen == equivariance_images(test, 3) and len(chosen) == 3
    indices = sorted(np.random.default_rng(0).choice(len(test), 3, replace=False))
    assert chosen == [str(test[int(index)]["path"]) for index in indices], "the subset landmark_equivariance.py drew"
    out = tmp_path / "eq.json"
    assert main(["eval-landmarks", "mtfl", "--equivariance", "--root", str(shared_data / "mtfl"), "--test-limit", "3",
                 "--checkpoint", str(tiny_c3), "--quiet", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["images"] == 3 and record["protocol"]["units"] == "percent of the image side"
    assert record["model"]["checkpoint"] == str(tiny_c3) and np.isfinite(record["mean_error"])
    out = tmp_path / "birds.json"
    assert main(["eval-landmarks", "cub", "--root", str(shared_data / "cub-birds-unlabeled"), "--test-limit", "2",
                 "--checkpoint", str(tiny_c3), "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"] == 2


def test_evaluate_landmarks_can_return_its_points(shared_data, tiny_c3):
    from corrmark import load_landmark_model

    model = load_landmark_model("c3", tiny_c3)
    train = open_image_dataset("mtfl", shared_data / "mtfl", "train")
    test = open_image_dataset("mtfl", shared_data / "mtfl", "test")
    result = evaluate_landmarks(model, train, test, train_limit=8, test_limit=4, return_points=True)
    points = result["points"]
    assert points["train"].shape == (8, 3, 2) and points["test"].shape == (4, 3, 2)
    assert points["train_annotated"].shape == (8, 5, 2) and points["test_annotated"].shape == (4, 5, 2)
    assert "points" not in evaluate_landmarks(model, train, test, train_limit=8, test_limit=4)
