"""The HTML pages corrmark writes, rendered by headless Chromium (Debian ``chromium``): the demo report (every
picture loads, the tables hold numbers, the legend and the PCK plot are there, the screenshot is not blank) and the
propagation gallery (pictures load, the confidence and keypoint-name legends are there).

``make test`` installs chromium when it is missing. Without it this test FAILS, so a CI machine without a browser is
noticed; set CORRMARK_SKIP_BROWSER_TEST=1 to skip it deliberately, or CORRMARK_CHROMIUM to a browser binary.
"""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BROWSER_NAMES = ("chromium", "chromium-browser")
WINDOW = (1280, 2400)


def chromium_binary() -> str:
    if os.environ.get("CORRMARK_SKIP_BROWSER_TEST") == "1":
        pytest.skip("CORRMARK_SKIP_BROWSER_TEST=1")
    configured = os.environ.get("CORRMARK_CHROMIUM")
    found = configured or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    if not found:
        pytest.fail("chromium not found: install it (apt-get install chromium; `make test` does) or set "
                    "CORRMARK_SKIP_BROWSER_TEST=1 to skip the browser test")
    return found


def run_chromium(binary: str, page: Path, work: Path, *mode: str) -> subprocess.CompletedProcess:
    profile = work / f"profile{len(list(work.glob('profile*')))}"  # a fresh profile per run: no shared state
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *mode,
               page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=work)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


class RenderedPage(HTMLParser):
    """The parts of the rendered DOM the assertions read: body attributes, images, and table cells by table id."""

    def __init__(self):
        super().__init__()
        self.body, self.images, self.tables = {}, [], {}
        self._table, self._row, self._cell = None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None


def parse_dom(text: str) -> RenderedPage:
    page = RenderedPage()
    page.feed(text)
    return page


def numbers_in(table: list[list[str]], columns: list[str]) -> list[float]:
    header, rows = table[0], table[1:]
    assert rows, f"table {header} has no rows"
    values = []
    for column in columns:
        index = header.index(column)
        for row in rows:
            assert re.fullmatch(r"-?\d+(\.\d+)?", row[index]), f"{column}: {row[index]!r} is not a number"
            values.append(float(row[index]))
    return values


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The demo on 2 pairs with the cheapest matcher (DINOv2 block 8 at 224 px)."""
    from corrmark.demo import run_demo

    binary = chromium_binary()  # fail or skip before spending time on the demo
    return binary, run_demo(tmp_path_factory.mktemp("demo") / "out", progress=False, pairs=2,
                            matchers=["dinov2-block8"])


def test_every_image_loads_and_tables_hold_numbers(demo_report, tmp_path):
    binary, report = demo_report
    dom = run_chromium(binary, report, tmp_path, "--dump-dom").stdout
    page = parse_dom(dom)
    source_images = report.read_text().count("<img ")
    assert source_images >= 2 and len(page.images) == source_images
    assert page.body.get("data-images") == str(source_images), "the image check did not run"
    assert page.body.get("data-images-broken") == "0"
    assert all(image.get("data-loaded") == "yes" for image in page.images)

    summary = page.tables["summary"]
    pair_columns = [column for column in summary[0] if re.match(r"\d+: ", column)]
    assert len(pair_columns) == 2
    scores = numbers_in(summary, [*pair_columns, "mean PCK@0.1"])
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert all(value > 0 for value in numbers_in(summary, ["s/pair", "load s"]))
    if "zoo" in page.tables:  # the zoo index of the checkout: numbers whether or not the weights are present
        numbers_in(page.tables["zoo-metrics"], ["value"])


def test_screenshot_is_not_blank(demo_report, tmp_path):
    binary, report = demo_report
    shot = tmp_path / "report.png"
    run_chromium(binary, report, tmp_path, f"--screenshot={shot}")
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (WINDOW[1], WINDOW[0])
    assert pixels.std() > 20, "the screenshot is nearly uniform"
    rows_with_content = (pixels.std(axis=1) > 5).mean()  # text, tables and pictures make rows vary
    assert rows_with_content > 0.2


def test_a_missing_picture_is_detected(demo_report, tmp_path):
    """The check itself: the same report with one picture gone shows it broken (and a warning)."""
    binary, report = demo_report
    copy = tmp_path / "copy"
    shutil.copytree(report.parent, copy)
    first = sorted(copy.glob("*.jpg"))[0]
    first.unlink()
    dom = run_chromium(binary, copy / "index.html", tmp_path, "--dump-dom").stdout
    page = parse_dom(dom)
    assert page.body.get("data-images-broken") == "1"
    assert [image["src"] for image in page.images if image.get("data-loaded") == "no"] == [first.name]
    assert f"1 of {report.read_text().count('<img ')} pictures failed to load" in dom


def test_demo_report_explains_its_pictures(demo_report, tmp_path):
    binary, report = demo_report
    dom = run_chromium(binary, report, tmp_path, "--dump-dom").stdout
    assert 'data-legend="How to read the figures"' in dom and "ring: the true target point" in dom
    assert '<svg class="plot"' in dom and 'data-series="zero-shot: DINOv2-S block 8' in dom  # PCK against alpha


def test_propagation_gallery_renders_with_legends(tmp_path):
    """A gallery from a tiny propagation (a matcher that scales points): pictures load, legends name the keypoints."""
    from test_propagate import ScaleMatcher, _image

    from corrmark.propagate import propagate_keypoints

    binary = chromium_binary()
    annotated = _image(tmp_path / "annotated.png", 64, 48)
    images = tmp_path / "images"
    images.mkdir()
    for name, width, height in [("a.png", 64, 48), ("b.png", 128, 96)]:
        _image(images / name, width, height)
    summary = propagate_keypoints(ScaleMatcher(), [(annotated, [[10.0, 12.0], [50.0, 20.0]])], images,
                                  tmp_path / "out.json", gallery_dir=tmp_path / "gallery", progress=False,
                                  keypoint_names=["nose", "tail"])
    page_path = Path(summary["gallery"])
    dom = run_chromium(binary, page_path, tmp_path, "--dump-dom").stdout
    page = parse_dom(dom)
    assert page.body.get("data-images") == "2" and page.body.get("data-images-broken") == "0"
    assert 'data-legend="Right image, point colour"' in dom and "0 nose" in dom and "1 tail" in dom
