"""Keypoint propagation with fake matchers whose mappings are known exactly: COCO output, confidence, failures,
resume and the CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from corrmark.cli import main
from corrmark.errors import CorrmarkError
from corrmark.io import check_keypoints, read_image
from corrmark.models import Matcher
from corrmark.propagate import (coco_points, combine_proposals, confidence_colour, cycle_scale, propagate_keypoints,
                                read_annotation)

SOURCE_POINTS = np.array([[10.0, 12.0], [50.0, 20.0], [30.0, 40.0]])
MARK = 255  # red value of pixel (0, 0) that makes MarkedOffsetMatcher shift its matches


class ScaleMatcher(Matcher):
    """Every image shows the same scene stretched to its size: the exact match of (x, y) is (x, y) * target size /
    source size. Perfectly cycle-consistent. Counts its calls and the image sizes it was asked to match to."""

    name = "scale"

    def __init__(self, offset: float = 0.0):
        self.offset = offset
        self.calls = 0
        self.target_sizes = []

    def estimate_mapping(self, source, target):
        raise NotImplementedError  # propagation only transfers points

    def transfer_keypoints(self, source, target, points):
        source, target = read_image(source), read_image(target)
        points = check_keypoints(points, source.shape[:2])
        self.calls += 1
        self.target_sizes.append(target.shape[:2])
        scale = np.array([target.shape[1] / source.shape[1], target.shape[0] / source.shape[0]])
        moved = points * scale + self._offset(source, target)
        return np.clip(moved, 0, [target.shape[1] - 1, target.shape[0] - 1])

    def _offset(self, source, target) -> float:
        return self.offset

    def describe(self):
        return {"name": self.name, "offset": self.offset}


class MarkedOffsetMatcher(ScaleMatcher):
    """Like ScaleMatcher, but matches to or from a marked image are shifted by 8 px each way (round trip 16 px)."""

    name = "marked-offset"

    def _offset(self, source, target) -> float:
        return 8.0 if MARK in (source[0, 0, 0], target[0, 0, 0]) else 0.0


class Stop(Exception):
    """Stands for a run that is killed midway."""


def _image(path, width, height, marked=False):
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
    if marked:
        pixels[0, 0, 0] = MARK
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    """An annotated 64x48 image outside the folder and four targets of different sizes inside it."""
    annotated = _image(tmp_path / "annotated.png", 64, 48)
    images = tmp_path / "images"
    images.mkdir()
    for name, width, height in [("a.png", 64, 48), ("b.jpg", 128, 96), ("c.png", 32, 48), ("d.PNG", 80, 40)]:
        _image(images / name, width, height)
    (images / "notes.txt").write_text("not an image")
    return annotated, images


def test_coco_output_structure_and_values(folder, tmp_path):
    annotated, images = folder
    visible = np.array([True, True, False])
    out = tmp_path / "out.json"
    summary = propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS, visible)], images, out, progress=False,
                                  keypoint_names=["nose", "tail", "paw"], category="dog")
    coco = json.loads(out.read_text())
    assert summary["propagated"] == 4 and summary["failed"] == 0 and summary["skipped"] == 0
    assert [image["file_name"] for image in coco["images"]] == ["a.png", "b.jpg", "c.png", "d.PNG"]
    assert coco["images"][1] == {"id": 2, "file_name": "b.jpg", "height": 96, "width": 128}
    assert coco["categories"] == [{"id": 1, "name": "dog", "supercategory": "dog",
                                   "keypoints": ["nose", "tail", "paw"], "skeleton": []}]
    assert coco["failed"] == [] and "cycle consistency" in coco["info"]["confidence"]
    doubled = coco["annotations"][1]  # b.jpg is the annotated image at twice the size
    assert doubled["image_id"] == 2 and doubled["category_id"] == 1 and doubled["iscrowd"] == 0
    assert doubled["keypoints"] == [20.0, 24.0, 2, 100.0, 40.0, 2, 0, 0, 0]  # the unlabelled point stays (0, 0, 0)
    assert doubled["num_keypoints"] == 2 and doubled["keypoint_sources"] == [0, 0, -1]
    assert doubled["keypoint_scores"] == [1.0, 1.0, 0.0] and doubled["score"] == 1.0
    assert doubled["bbox"] == [20.0, 24.0, 80.0, 16.0] and doubled["area"] == 1280.0
    points, scores = coco_points(doubled)
    assert np.allclose(points[:2], SOURCE_POINTS[:2] * 2) and np.isnan(points[2]).all()


def test_confidence_is_high_when_consistent_and_low_when_not(folder, tmp_path):
    annotated, images = folder
    consistent = propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, tmp_path / "good.json",
                                     progress=False)
    drifting = propagate_keypoints(ScaleMatcher(offset=6.0), [(annotated, SOURCE_POINTS)], images,
                                   tmp_path / "bad.json", progress=False)
    assert consistent["mean_score"] == 1.0
    # each way shifts by (6, 6): a round trip misses by about 17 px, against s = 0.05 x the 49 px box diagonal
    assert drifting["mean_score"] < 0.05
    assert cycle_scale(SOURCE_POINTS, (48, 64)) == pytest.approx(0.05 * np.hypot(40, 28))
    assert cycle_scale(SOURCE_POINTS[:1], (30, 40)) == pytest.approx(0.05 * 50)  # one point: the image diagonal


def test_several_annotated_images_keep_the_most_confident_proposal(folder, tmp_path):
    annotated, images = folder
    marked = _image(tmp_path / "marked.png", 64, 48, marked=True)
    visible_in_clean = np.array([True, False, True])
    propagate_keypoints(MarkedOffsetMatcher(), [(marked, SOURCE_POINTS), (annotated, SOURCE_POINTS, visible_in_clean)],
                        images, tmp_path / "out.json", progress=False)
    annotation = json.loads((tmp_path / "out.json").read_text())["annotations"][0]  # a.png: same size as both
    assert annotation["keypoint_sources"] == [1, 0, 1]  # point 1 is labelled only in the shifted (marked) image
    assert annotation["keypoint_scores"][0] == 1.0 and annotation["keypoint_scores"][2] == 1.0
    assert annotation["keypoint_scores"][1] < 0.01
    assert annotation["keypoints"][:2] == [10.0, 12.0] and annotation["keypoints"][3:5] == [58.0, 28.0]


def test_bad_images_are_listed_and_the_run_goes_on(folder, tmp_path):
    annotated, images = folder
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _image(images / "tiny.png", 4, 4)
    out = tmp_path / "out.json"
    summary = propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False)
    coco = json.loads(out.read_text())
    failed = {entry["file_name"]: entry["reason"] for entry in coco["failed"]}
    assert set(failed) == {"broken.jpg", "tiny.png"} and summary["failed"] == 2 and summary["propagated"] == 4
    assert "ImageReadError" in failed["broken.jpg"] and "4x4" in failed["tiny.png"]
    assert len(coco["images"]) == 4
    # a later run retries the failures; once fixed they are propagated and leave the failed list
    _image(images / "tiny.png", 40, 40)
    matcher = ScaleMatcher()
    propagate_keypoints(matcher, [(annotated, SOURCE_POINTS)], images, out, progress=False)
    coco = json.loads(out.read_text())
    assert [entry["file_name"] for entry in coco["failed"]] == ["broken.jpg"]
    assert coco["images"][-1]["file_name"] == "tiny.png" and matcher.target_sizes[0] == (40, 40)


def test_resume_skips_done_images_and_gives_the_same_json(folder, tmp_path):
    annotated, images = folder
    annotations = [(annotated, SOURCE_POINTS)]
    propagate_keypoints(ScaleMatcher(), annotations, images, tmp_path / "whole.json", progress=False)

    out = tmp_path / "resumed.json"
    first = ScaleMatcher()
    partial = propagate_keypoints(first, annotations, images, out, progress=False, limit=1)
    assert partial["propagated"] == 1 and partial["remaining"] == 3 and first.calls == 2  # forward + backward

    def stop_after_second(file_name):
        if file_name == "b.jpg":
            raise Stop()

    with pytest.raises(Stop):  # killed midway: the image it finished is saved
        propagate_keypoints(ScaleMatcher(), annotations, images, out, progress=False, on_image=stop_after_second)
    assert [image["file_name"] for image in json.loads(out.read_text())["images"]] == ["a.png", "b.jpg"]

    last = ScaleMatcher()
    summary = propagate_keypoints(last, annotations, images, out, progress=False)
    assert summary["skipped"] == 2 and summary["propagated"] == 2 and last.calls == 4
    assert sorted(size for size in last.target_sizes if size != (48, 64)) == [(40, 80), (48, 32)]  # c and d only
    assert out.read_text() == (tmp_path / "whole.json").read_text()

    again = ScaleMatcher()
    propagate_keypoints(again, annotations, images, out, progress=False, resume=False)
    assert again.calls == 8 and out.read_text() == (tmp_path / "whole.json").read_text()


def test_resume_refuses_an_output_made_with_other_settings(folder, tmp_path):
    annotated, images = folder
    out = tmp_path / "out.json"
    propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False, limit=1)
    with pytest.raises(CorrmarkError, match="different matcher"):
        propagate_keypoints(ScaleMatcher(offset=1.0), [(annotated, SOURCE_POINTS)], images, out, progress=False)
    with pytest.raises(CorrmarkError, match="different annotated_keypoints"):
        propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS + 1)], images, out, progress=False)
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(CorrmarkError, match="not a corrmark propagate output"):
        propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, tmp_path / "other.json",
                            progress=False)


def test_annotated_image_inside_the_folder_keeps_its_labels(folder, tmp_path):
    _, images = folder
    matcher = ScaleMatcher()
    propagate_keypoints(matcher, [(images / "a.png", SOURCE_POINTS)], images, tmp_path / "out.json", progress=False)
    annotation = json.loads((tmp_path / "out.json").read_text())["annotations"][0]
    assert annotation["keypoints"] == [10.0, 12.0, 2, 50.0, 20.0, 2, 30.0, 40.0, 2] and annotation["score"] == 1.0
    assert matcher.calls == 6  # only b, c and d were matched


def test_gallery_has_one_figure_per_image(folder, tmp_path):
    annotated, images = folder
    (images / "broken.jpg").write_bytes(b"nope")
    out, gallery = tmp_path / "out.json", tmp_path / "gallery"
    propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False, limit=2)
    summary = propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, gallery_dir=gallery,
                                  progress=False)  # the first two images' figures are drawn from the JSON
    page = (gallery / "index.html").read_text()
    assert summary["gallery"] == str(gallery / "index.html")
    assert page.count("<img") == 4 and "broken.jpg" in page
    assert sorted(path.name for path in (gallery / "figures").iterdir()) == [
        "a.png.jpg", "b.jpg.jpg", "c.png.jpg", "d.PNG.jpg"]
    assert Image.open(gallery / "figures" / "b.jpg.jpg").height == 320
    assert confidence_colour(0) == (220, 40, 40) and confidence_colour(1) == (40, 180, 70)


def test_read_annotation_formats(tmp_path):
    image = tmp_path / "set" / "dog.jpg"
    coco = {"images": [{"id": 7, "file_name": "other.jpg"}, {"id": 9, "file_name": "set/dog.jpg"}],
            "annotations": [{"image_id": 7, "category_id": 1, "keypoints": [1, 1, 2, 1, 1, 2]},
                            {"image_id": 9, "category_id": 1, "keypoints": [5, 6, 2, 0, 0, 0]}],
            "categories": [{"id": 1, "name": "dog", "keypoints": ["nose", "tail"]}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    points, visible, names = read_annotation(tmp_path / "coco.json", image)
    assert points.tolist() == [[5, 6], [0, 0]] and visible.tolist() == [True, False] and names == ["nose", "tail"]

    (tmp_path / "rows.json").write_text("[[1, 2, 2], [3, 4, 0]]")
    points, visible, names = read_annotation(tmp_path / "rows.json", image)
    assert points.tolist() == [[1, 2], [3, 4]] and visible.tolist() == [True, False] and names is None

    (tmp_path / "plain.csv").write_text("1,2\n3,4\n")
    points, visible, _ = read_annotation(tmp_path / "plain.csv", image)
    assert points.tolist() == [[1, 2], [3, 4]] and visible.all()

    with pytest.raises(CorrmarkError, match="no image whose file_name matches"):
        read_annotation(tmp_path / "coco.json", tmp_path / "cat.jpg")


def test_cli_end_to_end(folder, tmp_path, monkeypatch, capsys):
    annotated, images = folder
    (tmp_path / "points.json").write_text(json.dumps(SOURCE_POINTS.tolist()))
    matcher = ScaleMatcher()
    monkeypatch.setattr("corrmark.cli.commands_matching.matcher_from_args", lambda args: matcher)
    out, gallery = tmp_path / "out.json", tmp_path / "gallery"
    # the order of the issue: IMAGES_DIR right after the multi-value --points
    assert main(["propagate", "--annotated", str(annotated), "--points", str(tmp_path / "points.json"), str(images),
                 "--out", str(out), "--gallery", str(gallery), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "propagated: 4" in printed and "mean_score: 1.0" in printed
    coco = json.loads(out.read_text())
    assert len(coco["annotations"]) == 4 and coco["categories"][0]["keypoints"] == ["kp0", "kp1", "kp2"]
    assert (gallery / "index.html").is_file()

    assert main(["propagate", str(images), "--annotated", str(annotated), "--points", str(tmp_path / "points.json"),
                 "--out", str(out), "--quiet"]) == 0
    assert "skipped: 4" in capsys.readouterr().out and matcher.calls == 8


@pytest.mark.parametrize("arguments, message", [
    (["--points", "p.json"], "IMAGES_DIR"),
    (["--points", "p.json", "q.json", "IMAGES"], "one per --annotated image"),
    (["--points", "missing.json", "IMAGES"], "missing.json"),
])
def test_cli_user_errors_are_one_line(folder, tmp_path, monkeypatch, capsys, arguments, message):
    annotated, images = folder
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.json").write_text("[[1, 2]]")
    (tmp_path / "q.json").write_text("[[1, 2]]")
    arguments = [str(images) if value == "IMAGES" else value for value in arguments]
    assert main(["propagate", "--annotated", str(annotated), *arguments, "--out", "o.json"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("corrmark: error:") and message in error and "\n" not in error


def test_zero_shot_matcher_on_a_real_dog(nn_matcher, shared_data, tmp_path):
    """The real nn matcher: a shifted crop of the annotated dog gets its points back, more confidently than an image
    of noise does, and the matcher's own similarity is recorded next to the cycle confidence."""
    path = sorted((shared_data / "stanfordextra-sample" / "sample_imgs").rglob("*.jpg"))[0]
    dog = read_image(path)[:224, :280]
    Image.fromarray(dog[:, :252]).save(tmp_path / "annotated.png")
    (tmp_path / "images").mkdir()
    Image.fromarray(dog[:, 28:]).save(tmp_path / "images" / "a_shifted.png")
    noise = np.random.default_rng(0).integers(0, 256, (224, 252, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "images" / "b_noise.png")
    points = np.array([[100.0, 60.0], [150.0, 120.0], [200.0, 160.0], [60.0, 150.0]])
    propagate_keypoints(nn_matcher, [(tmp_path / "annotated.png", points)], tmp_path / "images", tmp_path / "o.json",
                        progress=False)
    shifted, noisy = json.loads((tmp_path / "o.json").read_text())["annotations"]
    moved, _ = coco_points(shifted)
    assert np.median(np.linalg.norm(moved - (points - [28, 0]), axis=1)) < 14  # within one DINOv2 cell
    assert shifted["score"] > noisy["score"] and len(shifted["keypoint_similarities"]) == 4


def test_a_real_proposal_beats_a_missing_one_even_at_zero_confidence():
    missing = (np.full((2, 2), np.nan), np.zeros(2), None)
    far_off = (np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.0, 0.5]), None)
    points, confidence, _, sources = combine_proposals([missing, far_off])
    assert points.tolist() == [[1, 2], [3, 4]] and confidence.tolist() == [0, 0.5] and sources.tolist() == [1, 1]


def test_cvat_coco_export_round_trip_keeps_category_and_image_ids(folder, tmp_path):
    """A CVAT "COCO Keypoints 1.0" export as input: the output keeps its category (id 3, names, skeleton) and the
    ids of the images it lists, gives new ids to the others, and reads back as a points file itself."""
    from pathlib import Path

    from corrmark.propagate import read_coco_context

    fixture = Path(__file__).parent / "fixtures" / "cvat_coco_keypoints.json"
    annotated, images = folder
    context = read_coco_context(fixture)
    points, visible, names = read_annotation(fixture, annotated)
    assert names == ["nose", "left_ear", "tail"] and visible.all()  # v = 1 is labelled too
    out = tmp_path / "out.json"
    propagate_keypoints(ScaleMatcher(), [(annotated, points, visible)], images, out, progress=False,
                        keypoint_names=names, coco=context)
    coco = json.loads(out.read_text())
    assert coco["categories"] == [{"id": 3, "name": "dog", "supercategory": "", "keypoints": names,
                                   "skeleton": [[1, 2], [1, 3]]}]
    ids = {image["file_name"]: image["id"] for image in coco["images"]}
    assert ids["a.png"] == 13 and ids["b.jpg"] == 12 and min(ids["c.png"], ids["d.PNG"]) == 14
    assert {a["category_id"] for a in coco["annotations"]} == {3}
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    b = next(a for a in coco["annotations"] if a["image_id"] == 12)
    np.testing.assert_allclose(coco_points(b)[0], SOURCE_POINTS * 2, atol=0.01)
    again, _, again_names = read_annotation(out, images / "b.jpg")  # the output is a valid input
    np.testing.assert_allclose(again, SOURCE_POINTS * 2, atol=0.01)
    assert again_names == names


def test_visibility_follows_the_documented_confidence_threshold(folder, tmp_path):
    from corrmark.formats import VISIBLE_THRESHOLD

    annotated, images = folder
    out = tmp_path / "out.json"
    propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False,
                        visible_threshold=1.01)  # nothing reaches it: every predicted point v = 1
    flags = {v for a in json.loads(out.read_text())["annotations"] for v in a["keypoints"][2::3]}
    assert flags == {1}
    propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False, resume=False)
    annotations = json.loads(out.read_text())["annotations"]
    for annotation in annotations:  # a perfect matcher: confidence 1 >= the default threshold
        assert set(annotation["keypoints"][2::3]) == {2}
    assert 0.36 < VISIBLE_THRESHOLD < 0.37


def test_label_studio_predictions_round_trip(folder, tmp_path):
    from corrmark.formats import read_label_studio_points

    annotated, images = folder
    out, tasks_file = tmp_path / "out.json", tmp_path / "tasks.json"
    propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False,
                        keypoint_names=["a", "b", "c"], label_studio=tasks_file, image_url_prefix="/data/local-files/?d=")
    tasks = json.loads(tasks_file.read_text())
    coco = json.loads(out.read_text())
    assert [task["data"]["image"] for task in tasks] == [f"/data/local-files/?d={i['file_name']}" for i in coco["images"]]
    region = tasks[0]["predictions"][0]["result"][0]
    assert region["type"] == "keypointlabels" and region["value"]["keypointlabels"] == ["a"] and "score" in region
    # percent of the image from its top-left corner: pixel centre 0 of a 64 px image is at 100 * 0.5 / 64 %
    read_back = read_label_studio_points(tasks, ["a", "b", "c"])
    for image in coco["images"]:
        expected = coco_points(next(a for a in coco["annotations"] if a["image_id"] == image["id"]))[0]
        np.testing.assert_allclose(read_back[f"/data/local-files/?d={image['file_name']}"], expected, atol=0.01)


def test_cli_label_studio_format_keeps_the_coco_beside_it(folder, tmp_path):
    annotated, images = folder
    points = tmp_path / "points.json"
    points.write_text(json.dumps(SOURCE_POINTS.tolist()))
    out = tmp_path / "tasks.json"
    code = main(["propagate", "--annotated", str(annotated), "--points", str(points), str(images), "--out", str(out),
                 "--format", "label-studio", "--quiet", "--preset", "dinov2-block8"])
    assert code == 0
    assert isinstance(json.loads(out.read_text()), list)
    assert json.loads((tmp_path / "tasks.coco.json").read_text())["annotations"]


def test_sigterm_saves_like_ctrl_c(folder, tmp_path):
    import os
    import signal

    annotated, images = folder
    out = tmp_path / "out.json"

    def terminate(file_name):
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler's stop sends

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        propagate_keypoints(ScaleMatcher(), [(annotated, SOURCE_POINTS)], images, out, progress=False, save_every=100,
                            on_image=terminate)
    assert len(json.loads(out.read_text())["images"]) == 1  # saved at once, not after save_every images
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back
