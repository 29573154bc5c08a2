"""`corrmark eval-landmarks` and `corrmark landmarks` end to end with a tiny random-weight JLAD checkpoint."""

import json

import numpy as np
from PIL import Image
from test_jlad import tiny_checkpoint  # noqa: F401  (the fixture)

from corrmark.cli import main


def test_eval_landmarks_on_mtfl(shared_data, tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "landmarks.json"
    assert main(["eval-landmarks", "mtfl", "--root", str(shared_data / "mtfl"), "--checkpoint", str(tiny_checkpoint),
                 "--train-limit", "24", "--test-limit", "12", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"]["normalisation"] == "inter-ocular" and result["num_landmarks"] == 3
    assert 0 < result["mean_error"] < 1000 and result["command"].startswith("corrmark eval-landmarks mtfl")
    assert "mean error" in capsys.readouterr().out


def test_landmarks_export(tiny_checkpoint, tmp_path):  # noqa: F811
    paths = []
    for index in range(2):
        path = tmp_path / f"image{index}.png"
        Image.fromarray((np.random.default_rng(index).random((48, 64, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    assert main(["landmarks", *paths, "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out")]) == 0
    exported = json.loads((tmp_path / "out" / "landmarks.json").read_text())
    assert len(exported["images"]) == 2 and np.asarray(exported["images"][0]["points"]).shape == (3, 2)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["landmarks", "x.png", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "none.pt" in error and "\n" not in error
