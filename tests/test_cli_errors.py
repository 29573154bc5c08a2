"""Every bad input on the command line is one line on stderr and a non-zero exit: no traceback (issue 18)."""


import numpy as np
import pytest
import torch
from PIL import Image

from corrmark.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    image = folder / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    for name, text in {"empty.json": "{}", "four.json": "[[10, 20, 30, 40]]", "null.json": "null",
                       "one.csv": "10\n20\n", "good.json": "[[10, 12]]"}.items():
        (folder / name).write_text(text)
    (folder / "binary.txt").write_bytes(b"\xff\xfe\x00\x01")
    (folder / "a_file").write_text("not a folder")
    torch.save({"model": {"w": torch.zeros(1)}, "config": {"method": "jlad", "model": {}}}, folder / "jlad.pt")
    torch.save({"model": {"w": torch.zeros(1)}}, folder / "noconfig.pt")
    torch.save({"model": {"w": torch.zeros(1)}, "config": "str"}, folder / "strconfig.pt")
    return folder


def match(files, *extra, points="good.json", out=None):
    return ["match", str(files / "a.png"), str(files / "a.png"), "--points", str(files / points),
            "--out", str(out or files / "out"), "--preset", "dinov2-block8", *extra]


CASES = {
    "points {}": lambda f: match(f, points="empty.json"),
    "points of four values": lambda f: match(f, points="four.json"),
    "points null": lambda f: match(f, points="null.json"),
    "one-value csv": lambda f: match(f, points="one.csv"),
    "binary points file": lambda f: match(f, points="binary.txt"),
    "missing points file": lambda f: match(f, points="nowhere.json"),
    "image size 0": lambda f: match(f, "--image-size", "0"),
    "sigma nan": lambda f: match(f, "--sigma", "nan"),
    "beta -1": lambda f: match(f, "--beta", "-1"),
    "unknown device": lambda f: match(f, "--device", "gpu9"),
    "out is a file": lambda f: match(f, out=f / "a_file"),
    "out under /proc": lambda f: match(f, out="/proc/corrmark_out"),
    "300-character image name": lambda f: ["match", str(f / ("x" * 300 + ".png")), str(f / "a.png"), "--out",
                                          str(f / "o2"), "--preset", "dinov2-block8"],
    "checkpoint of another method": lambda f: ["eval", "pairs-file", "--root", str(f / "good.json"), "--matcher",
                                              "sfnet", "--checkpoint", str(f / "jlad.pt")],
    "checkpoint without config": lambda f: ["eval", "pairs-file", "--root", str(f / "good.json"), "--matcher",
                                           "sfnet", "--checkpoint", str(f / "noconfig.pt")],
    "checkpoint with a text config": lambda f: ["eval", "pairs-file", "--root", str(f / "good.json"), "--matcher",
                                               "sfnet", "--checkpoint", str(f / "strconfig.pt")],
    "propagate out under /proc": lambda f: ["propagate", "--annotated", str(f / "a.png"), "--points",
                                           str(f / "good.json"), str(f), "--out", "/proc/corrmark.json",
                                           "--preset", "dinov2-block8", "--quiet"],
    "train override without =": lambda f: ["train", str(f / "good.json"), "--set", "train.steps"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_non_zero(files, name, capsys):
    code = main(CASES[name](files))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code != 0, f"{name}: exit 0"
    assert len(lines) == 1 and lines[0].startswith("corrmark: error: "), f"{name}: {captured.err!r}"
    assert "Traceback" not in captured.err


def test_a_failed_match_leaves_no_empty_output_folder(files):
    out = files / "never_made"
    assert main(match(files, points="four.json", out=out)) == 2
    assert not out.exists()
