"""Keep the numbers docs/TUTORIAL.md quotes true: run the tutorial as a reader would and compare.

``tests/tutorial_runner.py`` runs every block of the tutorial in order (about 6 minutes on 2 cores, mostly the small
JLAD/C3 trainings and the zoo models). Each entry of ``QUOTES`` is a piece of the tutorial's text (it must be in
TUTORIAL.md word for word) and the numbers it states (by default every number in the text), which must appear, in
that order and at the quoted precision, in what the tutorial's commands printed, or in the named output file.
Timings are never quoted here. A quote may carry a tolerance (a fourth item, in the quoted unit): only for the
results of a few training steps from a random start, whose digits depend on the CPU's float kernels. When a result
legitimately changes, re-run
``PYTHONPATH=src python tests/tutorial_runner.py --out /tmp/tutorial`` and update the tutorial and this list together.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tutorial_runner import TUTORIAL, run_tutorial

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

# (text in TUTORIAL.md, numbers to find (None: the numbers in the text), file of the run to read instead of stdout
#  [, tolerance: how far each found number may be from the quoted one])
#: JLAD after 10 steps from a random start: 58.46 % (per landmark 55.1 .. 75.2) on the machine the tutorial was
#: written on, 53.16 % (42.8 .. 65.7) on an AMD EPYC; a trained model gives about 17 %.
TEN_STEP_TOLERANCE = 12.0
QUOTES = [
    ("(266, 400, 2): one entry per pixel of dog_b.jpg", [266, 400, 2], None),
    ("[275.62 159.16]: source (x, y) of target pixel", [275.62, 159.16], None),
    ("[[191.1 240.4]  [191.1 240.5]  [ 56.2  40.8]  [273.7  57.7]  [271.   88.2]]", None, None),
    ("source keypoints #0 (400, 10) lie outside the 360x296 image", None, None),
    ("mean_score: 0.4595", None, None),
    ("[200.63, 318.6, 2, 280.74, 318.62, 2, 10.19, 112.72, 2, 273.7, 48.59, 1, 260.37, 133.07, 2]", None,
     "my_dogs.json"),
    ("[0.5646, 0.7926, 0.7342, 0.2081, 0.9465]", None, "my_dogs.json"),
    ("# 20 4 1 0.5001", None, None),
    ("# mean_score: 0.5319", None, None),
    ("all               5    0.2888   0.6321    0.7356", None, None),
    ("all               5    0.5172   0.7241    0.8276", None, None),
    ("dog  6 pairs  PCK@0.05 0.1832  PCK@0.1 0.3550  PCK@0.15 0.4871", [6, 0.1832, 0.3550, 0.4871], None),
    ("car(G)  4 pairs  PCK@0.05 0.1750  PCK@0.1 0.5500", [4, 0.1750, 0.5500], None),
    ("# [[274.8 85.] [238.8 52.3]]", None, None),
    ("coco: mean error 58.46% of the kp-bbox length", None, None, TEN_STEP_TOLERANCE),
    ("per landmark in the JSON: 55.1 51.8 75.2 48.8 61.5", [55.1, 51.8, 75.2, 48.8, 61.5], "my_faces_eval.json",
     1.5 * TEN_STEP_TOLERANCE),
    ("coco: mean error 17.57% of the kp-bbox length", None, None),
    ("mtfl: mean error 15.72% of the inter-ocular length", None, None),
    ("equivariance error 5.25% of the image side (median 4.60%, 40 images", None, None),
    ("equivariance error 1.01% of the image side (median 0.87%, 40 images", None, None),
]


def numbers_in(text: str) -> list[str]:
    return NUMBER.findall(text)


def appears_in_order(wanted: list, printed: list[str], tolerance: float = 0.0) -> bool:
    """``wanted`` numbers occur as a contiguous run of ``printed`` numbers, each equal at the quoted precision (or
    within ``tolerance`` of it)."""
    def equal(quoted, found: str) -> bool:
        text = str(quoted)
        decimals = len(text.split(".")[1]) if "." in text else 0
        return abs(round(float(found), decimals) - float(text)) < 0.5 * 10 ** -decimals + 1e-12 + tolerance
    return any(all(equal(q, printed[start + i]) for i, q in enumerate(wanted))
               for start in range(len(printed) - len(wanted) + 1))


def test_number_matching_is_strict():
    assert appears_in_order(["0.4595"], numbers_in("mean_score: 0.45951"))
    assert not appears_in_order(["0.4595"], numbers_in("mean_score: 0.4596"))
    assert appears_in_order([275.62, 159.16], numbers_in("[275.6217  159.15677]"))
    assert not appears_in_order([1, 2], numbers_in("2 1"))
    assert appears_in_order(["58.46"], numbers_in("53.16%"), tolerance=12.0)
    assert not appears_in_order(["58.46"], numbers_in("17.57%"), tolerance=12.0)  # a trained model is not 10 steps


def test_every_quote_is_in_the_tutorial():
    text = TUTORIAL.read_text()
    missing = [quote for quote, *_ in QUOTES if quote not in text]
    assert not missing, f"quoted in tests/test_tutorial.py but not in TUTORIAL.md: {missing}"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data")
def test_the_tutorial_prints_what_it_quotes(tmp_path):
    records = run_tutorial(DATA, tmp_path)
    printed = numbers_in("\n".join(record["output"] for record in records))
    wrong = []
    for quote, wanted, file_name, *tolerance in QUOTES:
        wanted = [str(value) for value in (wanted if wanted is not None else numbers_in(quote))]
        source = printed if file_name is None else numbers_in(
            json.dumps(json.loads((tmp_path / "tutorial" / file_name).read_text())))
        if not appears_in_order(wanted, source, *tolerance):
            wrong.append(quote)
    assert not wrong, f"TUTORIAL.md quotes numbers the run no longer gives: {wrong}"
