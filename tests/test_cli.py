"""The command line: each command end to end on small inputs, and one clear line for each user error."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corrmark.cli import main, parse_layers


def test_parse_layers():
    assert parse_layers(None) is None
    assert parse_layers(["8"]) == [8]
    assert parse_layers(["8,9"]) == [8, 9]
    assert parse_layers(["8", "2,3"]) == [[8], [2, 3]]


def test_eval_writes_table_and_json(shared_data, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["eval", "pf-willow", "--root", str(shared_data / "pf-willow"), "--matcher", "nn",
                 "--backbone", "dinov2_vits14", "--layers", "8", "--image-size", "224", "--direction", "s2t",
                 "--limit", "2", "--json", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "car(G)" in printed and "PCK@0.1" in printed
    result = json.loads(out.read_text())
    assert result["dataset"] == "pf-willow" and result["pairs"] == 2
    assert set(result["pck"]) == {"0.05", "0.1", "0.15"} and 0 <= result["pck"]["0.1"] <= 1
    assert result["protocol"] == {"direction": "s2t", "threshold": "kp-bbox", "averaging": "pair",
                                  "alphas": [0.05, 0.1, 0.15], "resolution": "original"}
    assert result["matcher"]["backbone"] == "dinov2_vits14" and "car(G)" in result["per_category"]
    assert result["command"].startswith("corrmark eval pf-willow")


@pytest.mark.parametrize("arguments, message", [
    (["eval", "pf-willow", "--root", "/no/such/folder"], "/no/such/folder"),
    (["eval", "no-such-set", "--root", "."], "unknown pair dataset 'no-such-set'"),
    (["eval", "pf-willow", "--root", ".", "--layers", "x"], "--layers takes integers"),
])
def test_user_errors_are_one_line(arguments, message, capsys):
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("corrmark: error:") and message in error and "\n" not in error


def test_unknown_backbone_is_one_line(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["match", str(image), str(image), "--out", str(tmp_path / "o"), "--backbone", "resnet9000"]) == 2
    error = capsys.readouterr().err.strip()
    assert "resnet9000" in error and "\n" not in error


def test_match_writes_mapping_warp_overlay_and_points(shared_data, tmp_path, capsys):
    folder = shared_data / "pf-willow" / "PF-dataset-WILLOW" / "duck(S)"
    source, target = folder / "060_0000.png", folder / "060_0002.png"
    points = tmp_path / "points.json"
    points.write_text(json.dumps([[50, 60], [100, 80]]))
    out = tmp_path / "out"
    assert main(["match", str(source), str(target), "--points", str(points), "--out", str(out)]) == 0
    target_size = Image.open(target).size
    mapping = np.load(out / "mapping.npy")
    assert mapping.shape == (target_size[1], target_size[0], 2)
    assert Image.open(out / "warped_source.png").size == target_size
    assert Image.open(out / "overlay.png").size == target_size
    written = json.loads((out / "points.json").read_text())
    assert np.asarray(written["target_points"]).shape == (2, 2) and written["source_points"] == [[50, 60], [100, 80]]
    assert (out / "matches.png").is_file()


def test_match_keeps_names_and_skips_unlabelled_points(shared_data, tmp_path):
    """A COCO keypoints file (as ``propagate`` takes) gives ``match`` its names; v = 0 points are not transferred."""
    folder = shared_data / "pf-willow" / "PF-dataset-WILLOW" / "duck(S)"
    source, target = folder / "060_0000.png", folder / "060_0002.png"
    coco = {"images": [{"id": 7, "file_name": source.name}],
            "annotations": [{"image_id": 7, "keypoints": [50, 60, 2, 0, 0, 0, 100, 80, 1]}],
            "categories": [{"id": 1, "name": "duck", "keypoints": ["beak", "tail", "eye"]}]}
    points = tmp_path / "duck.json"
    points.write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert main(["match", str(source), str(target), "--points", str(points), "--out", str(out), "--matcher", "nn",
                 "--backbone", "efficientnet_lite0", "--layers", "3", "--image-size", "128"]) == 0
    written = json.loads((out / "points.json").read_text())
    assert written["names"] == ["beak", "tail", "eye"] and written["visible"] == [True, False, True]
    assert written["target_points"][1] is None
    assert all(len(written["target_points"][index]) == 2 for index in (0, 2))


def test_match_rejects_a_bad_image_and_bad_points(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(good)
    assert main(["match", str(broken), str(good), "--out", str(tmp_path / "o")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    points = tmp_path / "p.json"
    points.write_text("[[10, 10], [100, 5]]")
    assert main(["match", str(good), str(good), "--points", str(points), "--out", str(tmp_path / "o")]) == 2
    assert "outside the 30x40 image" in capsys.readouterr().err


def test_demo_writes_a_report(tmp_path, capsys):
    # two pairs, the cheapest matcher: the full showcase (every matcher, every pair) is `make demo`
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet", "--pairs", "2", "--matchers", "dinov2-block8",
                 "--no-trained"]) == 0
    report = (tmp_path / "demo" / "index.html").read_text()
    assert "Summary" in report and report.count("<img") == 2 and "Model zoo" in report
    for name in ("p0_dinov2_block8.jpg", "p1_dinov2_block8.jpg"):
        assert (tmp_path / "demo" / name).is_file()
    assert "demo report:" in capsys.readouterr().out
    assert main(["demo", "--out", str(tmp_path / "demo"), "--pairs", "0"]) == 2
    assert "--pairs takes a positive number" in capsys.readouterr().err


def test_eval_from_a_checked_in_config(shared_data, tmp_path):
    out = tmp_path / "r.json"
    config = Path(__file__).resolve().parents[1] / "configs" / "zero_shot" / "pf_willow_dinov2_b8.yaml"
    assert main(["eval", "--config", str(config), "--root",
                 str(shared_data / "pf-willow"), "--direction", "t2s", "--limit", "1", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"].endswith("pf_willow_dinov2_b8.yaml") and result["protocol"]["direction"] == "t2s"
    assert result["matcher"]["sigma"] == 0 and result["experiment"]["split"] == "all"


def test_eval_stanfordextra(shared_data, tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval", "stanfordextra", "--root", str(shared_data / "stanfordextra-sample"), "--limit", "2",
                 "--direction", "s2t", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "stanfordextra" and result["pairs"] == 2


def test_landmarks_takes_the_model_from_the_checkpoint(tmp_path, capsys):
    # a C3 checkpoint works without --model c3 (the checkpoint's config names its method); --model still wins
    checkpoint = _tiny_c3_checkpoint(tmp_path / "c3.pt")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(image)
    assert main(["landmarks", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 0
    exported = json.loads((tmp_path / "out" / "landmarks.json").read_text())
    assert exported["model"]["name"] == "c3" and np.asarray(exported["images"][0]["points"]).shape == (3, 2)
    assert main(["landmarks", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o2"),
                 "--model", "jlad"]) == 2
    assert "is a c3 checkpoint, not jlad" in capsys.readouterr().err


def test_a_trained_matcher_option_it_does_not_take_is_one_line(tmp_path, capsys):
    # the jlad loader takes no image size: one line naming the option, not a TypeError traceback (checked before
    # the checkpoint is read, so no weights are needed here)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["match", str(image), str(image), "--out", str(tmp_path / "o"), "--matcher", "jlad",
                 "--checkpoint", str(tmp_path / "none.pt"), "--image-size", "224"]) == 2
    error = capsys.readouterr().err.strip()
    assert "image_size" in error and "weights_files" in error and "\n" not in error


def test_train_seed_repeats_the_run_in_its_own_folder(tmp_path, monkeypatch, capsys):
    """``--seed N`` changes the seed, the name and the default folder (never resumes the original run) and the
    checkpoint records the seed it ran with; the same seed twice gives the same weights."""
    import torch
    from test_distributed import ToyData, toy_step

    from corrmark.train import read_checkpoint, register_method
    from corrmark.train.runner import Experiment

    def build(config, device):
        model = torch.nn.Linear(4, 1)  # initialised from the run's seed (seed_everything before the build)
        return Experiment(model=model, optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.05), step=toy_step,
                          data=ToyData(), max_steps=2)

    register_method("toy-seed", build)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.yaml").write_text("method: toy-seed\nname: toy\nseed: 0\noutput: runs/toy\n")
    assert main(["train", "toy.yaml", "--quiet"]) == 0
    assert main(["train", "toy.yaml", "--quiet", "--seed", "3"]) == 0
    assert main(["train", "toy.yaml", "--quiet", "--seed", "3", "--out", "again"]) == 0
    original = read_checkpoint(tmp_path / "runs/toy/final.pt")
    repeat = read_checkpoint(tmp_path / "runs/toy_seed3/final.pt")
    again = read_checkpoint(tmp_path / "again/final.pt")
    assert original["config"]["seed"] == 0 and repeat["config"]["seed"] == 3
    assert repeat["config"]["name"] == "toy_seed3"
    assert not torch.equal(original["model"]["weight"], repeat["model"]["weight"])
    assert torch.equal(repeat["model"]["weight"], again["model"]["weight"])
    assert "runs/toy_seed3/final.pt" in capsys.readouterr().out


def test_train_quiet_reaches_the_builder(tmp_path, monkeypatch):
    """``--quiet`` silences the builders' bars (feature banks, image loading) too, not only the step bar."""
    import torch
    from test_distributed import ToyData, toy_step

    from corrmark.train import register_method
    from corrmark.train.runner import Experiment

    seen = []

    def build(config, device, progress=True):
        seen.append(progress)
        return Experiment(model=torch.nn.Linear(4, 1), optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.05),
                          step=toy_step, data=ToyData(), max_steps=1)

    register_method("toy-quiet", build)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.yaml").write_text("method: toy-quiet\nname: toy\n")
    assert main(["train", "toy.yaml", "--quiet", "--out", "a"]) == 0
    assert main(["train", "toy.yaml", "--out", "b"]) == 0
    assert seen == [False, True]


def _tiny_c3_checkpoint(path):
    import torch

    from corrmark.models.c3 import C3Net
    from corrmark.train.checkpoint import save_checkpoint

    model = {"image_size": 32, "num_landmarks": 3, "pose_channels": 4, "appearance_channels": 8,
             "generator_channels": 16, "flow_channels": 8}
    torch.manual_seed(0)
    return save_checkpoint(path, {"model": C3Net(model).state_dict(), "config": {"method": "c3", "model": model}})


def test_eval_landmarks_on_own_coco_annotations(tmp_path, capsys):
    """``eval-landmarks coco``: the regression protocol on a user's COCO keypoints files (what propagate writes)."""
    rng = np.random.default_rng(0)
    images = tmp_path / "imgs"
    images.mkdir()

    def coco(names, unlabelled=()):
        entries, annotations = [], []
        for number, name in enumerate(names):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / name)
            keypoints = [10 + number, 12, 2, 30, 25 + number, 0 if name in unlabelled else 2]
            entries.append({"id": number, "file_name": name})
            annotations.append({"id": number, "image_id": number, "category_id": 1, "keypoints": keypoints})
        return {"images": entries, "annotations": annotations,
                "categories": [{"id": 1, "name": "thing", "keypoints": ["a", "b"]}]}

    (tmp_path / "fit.json").write_text(json.dumps(coco([f"f{i}.png" for i in range(8)], unlabelled={"f3.png"})))
    (tmp_path / "test.json").write_text(json.dumps(coco([f"t{i}.png" for i in range(4)])))
    checkpoint = _tiny_c3_checkpoint(tmp_path / "c3.pt")
    out = tmp_path / "err.json"
    assert main(["eval-landmarks", "coco", "--fit", str(tmp_path / "fit.json"), "--test", str(tmp_path / "test.json"),
                 "--root", str(images), "--checkpoint", str(checkpoint), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["train_images"] == 8 and result["test_images"] == 4
    assert result["protocol"]["normalisation"] == "kp-bbox" and len(result["per_landmark"]) == 2
    assert np.isfinite(result["mean_error"])
    capsys.readouterr()
    assert main(["eval-landmarks", "coco", "--test", str(tmp_path / "test.json"), "--checkpoint", str(checkpoint)]) == 2
    assert "--fit" in capsys.readouterr().err
    assert main(["eval-landmarks", "mtfl", "--checkpoint", str(checkpoint)]) == 2
    assert "--root" in capsys.readouterr().err


def test_eval_landmarks_on_a_folder_without_annotations(tmp_path, capsys):
    """``eval-landmarks folder``: the label-free equivariance check on the images of a folder."""
    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir()
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (30 + index, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{index}.png")
    checkpoint = _tiny_c3_checkpoint(tmp_path / "c3.pt")
    out = tmp_path / "eq.json"
    assert main(["eval-landmarks", "folder", "--root", str(tmp_path / "imgs"), "--checkpoint", str(checkpoint),
                 "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 3 and len(result["per_landmark"]) == 3 and result["mean_error"] >= 0
    assert "equivariance error" in capsys.readouterr().out
