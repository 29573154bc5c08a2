"""Propagation at scale: images read ahead by DataLoader workers, shards (one per process or machine) and their merge.
Every way of running must write the bytes of the plain single-process run."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_propagate import SOURCE_POINTS, MarkedOffsetMatcher, ScaleMatcher, Stop, _image

import corrmark
from corrmark.cli import main
from corrmark.errors import CorrmarkError
from corrmark.propagate import (IMAGE_FAILURES, merge_shard_files, propagate_keypoints, read_coco_context,
                                read_images, shard_path)

CVAT_EXPORT = Path(__file__).parent / "fixtures" / "cvat_coco_keypoints.json"
# sha256 of the output below (temporary folder written <tmp>), computed with the code before reading ahead and shards
GOLDEN_SHA256 = "a85517b3f5a48041fb7b68d793a297149d9500a4dc3c5b75e046a316d651d83f"


@pytest.fixture()
def scene(tmp_path):
    """Two annotated images (one marked: MarkedOffsetMatcher shifts matches to or from it) and a folder of six
    targets of different sizes (one marked) and one too small to propagate to."""
    annotated = _image(tmp_path / "annotated.png", 64, 48)
    marked = _image(tmp_path / "marked.png", 64, 48, marked=True)
    images = tmp_path / "images"
    images.mkdir()
    for name, width, height in [("a.png", 64, 48), ("b.jpg", 128, 96), ("c.png", 32, 48), ("d.PNG", 80, 40),
                                ("f.png", 50, 60)]:
        _image(images / name, width, height)
    _image(images / "e.png", 90, 70, marked=True)
    _image(images / "tiny.png", 4, 4)
    sources = [(marked, SOURCE_POINTS), (annotated, SOURCE_POINTS, [True, False, True])]
    return sources, images


def _run(scene, out, **options):
    sources, images = scene
    return propagate_keypoints(MarkedOffsetMatcher(offset=0.5), sources, images, out, progress=False, **options)


def test_plain_run_is_unchanged(scene, tmp_path):
    _run(scene, tmp_path / "out.json")
    text = (tmp_path / "out.json").read_text().replace(str(tmp_path), "<tmp>")
    assert hashlib.sha256(text.encode()).hexdigest() == GOLDEN_SHA256


@pytest.mark.parametrize("workers, batch_size", [(1, 1), (2, 3)])
def test_reading_ahead_writes_the_same_bytes(scene, tmp_path, workers, batch_size):
    (scene[1] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    plain = _run(scene, tmp_path / "plain.json")
    ahead = _run(scene, tmp_path / "ahead.json", workers=workers, batch_size=batch_size)
    assert (tmp_path / "plain.json").read_bytes() == (tmp_path / "ahead.json").read_bytes()
    failed = json.loads((tmp_path / "ahead.json").read_text())["failed"]
    assert [entry["file_name"] for entry in failed] == ["broken.jpg", "tiny.png"]
    assert failed[0]["reason"].startswith("ImageReadError: cannot decode image")  # the reader's own error, kept
    assert {key: plain[key] for key in plain if key not in ("out", "seconds")} == {
        key: ahead[key] for key in ahead if key not in ("out", "seconds")}


def test_read_images_keeps_order_and_reasons(tmp_path):
    good = _image(tmp_path / "good.png", 20, 10)
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [good, tmp_path / "missing.png", tmp_path / "empty.png", good]
    inline = list(read_images(paths, IMAGE_FAILURES))
    ahead = list(read_images(paths, IMAGE_FAILURES, workers=2, batch_size=1))
    assert [path for path, _, _ in ahead] == paths
    assert [reason for _, _, reason in ahead] == [reason for _, _, reason in inline]
    assert inline[1][2] == f"ImageReadError: image file not found: {tmp_path / 'missing.png'}"
    assert "empty" in inline[2][2] and inline[0][1].shape == (10, 20, 3)
    np.testing.assert_array_equal(ahead[3][1], inline[3][1])
    with pytest.raises(CorrmarkError, match="workers"):
        list(read_images(paths, IMAGE_FAILURES, workers=-1))


def test_a_stop_while_reading_ahead_saves_and_resumes_to_the_same_json(scene, tmp_path):
    _run(scene, tmp_path / "whole.json")
    out = tmp_path / "out.json"

    def stop_after_b(file_name):
        if file_name == "b.jpg":
            raise Stop()

    with pytest.raises(Stop):
        _run(scene, out, workers=1, batch_size=2, on_image=stop_after_b)
    assert [image["file_name"] for image in json.loads(out.read_text())["images"]] == ["a.png", "b.jpg"]
    _run(scene, out, workers=1, batch_size=2)
    assert out.read_bytes() == (tmp_path / "whole.json").read_bytes()


def test_shards_merge_to_the_single_process_bytes(tmp_path):
    """Three shards of a run that keeps a COCO input's category and image ids (the merge numbers the other images
    as one process would) merge into the single-process output, Label Studio predictions included."""
    from corrmark.propagate import read_annotation

    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a.png": (64, 48), "b.jpg": (128, 96), "c.png": (32, 48), "d.png": (80, 40), "e.png": (50, 60),
             "f.png": (70, 70), "g.png": (4, 4)}  # the export lists a.png (id 13) and b.jpg (id 12)
    for name, (width, height) in sizes.items():
        _image(images / name, width, height)
    annotated = _image(tmp_path / "annotated.png", 64, 48)
    points, visible, names = read_annotation(CVAT_EXPORT, annotated)
    options = dict(keypoint_names=names, coco=read_coco_context(CVAT_EXPORT), progress=False)
    sources = [(annotated, points, visible)]
    single = propagate_keypoints(ScaleMatcher(), sources, images, tmp_path / "single.json",
                                 label_studio=tmp_path / "single_ls.json", **options)
    for rank in (2, 0, 1):
        part = propagate_keypoints(ScaleMatcher(), sources, images, tmp_path / "out.json", shard=(rank, 3),
                                   **options)
        assert part["out"] == str(shard_path(tmp_path / "out.json", rank, 3)) and part["rank"] == rank
    merged = merge_shard_files(tmp_path / "out.json", label_studio=tmp_path / "ls.json")
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    assert (tmp_path / "ls.json").read_bytes() == (tmp_path / "single_ls.json").read_bytes()
    assert merged == {"out": str(tmp_path / "out.json"), "images": 7, "propagated": 6, "failed": 1, "remaining": 0,
                      "mean_score": single["mean_score"], "world_size": 3}
    ids = {image["file_name"]: image["id"] for image in json.loads((tmp_path / "out.json").read_text())["images"]}
    assert ids == {"a.png": 13, "b.jpg": 12, "c.png": 14, "d.png": 15, "e.png": 16, "f.png": 17}
    shard = json.loads(shard_path(tmp_path / "out.json", 2, 3).read_text())
    assert shard["shard"]["file_names"] == ["c.png", "f.png"] and shard["shard"]["images"] == 7
    assert [image["id"] for image in shard["images"]] == [14, 15]  # numbered alone; the merge renumbers f.png


def test_a_shard_resumes_alone_and_a_partial_merge_counts_what_remains(scene, tmp_path):
    _run(scene, tmp_path / "single.json")
    out = tmp_path / "out.json"
    first = _run(scene, out, shard=(0, 2), limit=2)
    assert first["propagated"] == 2 and first["remaining"] == 2
    _run(scene, out, shard=(1, 2))
    partial = merge_shard_files(out)
    assert partial["remaining"] == 2 and partial["images"] == 7
    again = _run(scene, out, shard=(0, 2))
    assert again["skipped"] == 2 and again["propagated"] + again["failed"] == 2
    merge_shard_files(out)
    assert out.read_bytes() == (tmp_path / "single.json").read_bytes()


def test_resumed_shards_of_a_changed_folder_keep_only_their_images(scene, tmp_path):
    out = tmp_path / "out.json"
    for rank in (0, 1):
        _run(scene, out, shard=(rank, 2))
    _image(scene[1] / "a0.png", 40, 30)  # shifts every later image to the other shard
    taken = [_run(scene, out, shard=(rank, 2))["propagated"] for rank in (0, 1)]
    assert taken == [3, 3]  # only a.png stays in its shard; the others move and are matched again (tiny fails)
    shard = json.loads(shard_path(out, 0, 2).read_text())
    assert [image["file_name"] for image in shard["images"]] == ["a.png", "b.jpg", "d.PNG", "f.png"]
    merge_shard_files(out)
    _run(scene, tmp_path / "single.json")
    assert out.read_bytes() == (tmp_path / "single.json").read_bytes()


def test_merge_refuses_shards_that_do_not_fit(scene, tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(CorrmarkError, match="no shard files"):
        merge_shard_files(out)
    _run(scene, out, shard=(0, 2))
    with pytest.raises(CorrmarkError, match=r"missing shard file.*shard-1-of-2"):
        merge_shard_files(out)
    _run(scene, out, shard=(0, 3))
    with pytest.raises(CorrmarkError, match="several runs"):
        merge_shard_files(out)
    shard_path(out, 0, 3).unlink()
    sources, images = scene
    propagate_keypoints(ScaleMatcher(), sources, images, out, shard=(1, 2), progress=False)
    with pytest.raises(CorrmarkError, match="different matchers"):
        merge_shard_files(out)
    _image(images / "z.png", 30, 30)  # the list changed after shard 0 was made
    _run(scene, out, shard=(1, 2), resume=False)
    with pytest.raises(CorrmarkError, match="different image lists"):
        merge_shard_files(out)
    with pytest.raises(CorrmarkError, match="shard must be"):
        _run(scene, out, shard=(2, 2))


def test_cli_shards_and_merge(scene, tmp_path, monkeypatch, capsys):
    sources, images = scene
    annotated = sources[1][0]
    (tmp_path / "points.json").write_text(json.dumps(SOURCE_POINTS.tolist()))
    monkeypatch.setattr("corrmark.cli.commands_matching.matcher_from_args", lambda args: ScaleMatcher())
    common = ["--annotated", str(annotated), "--points", str(tmp_path / "points.json"), str(images), "--quiet",
              "--format", "label-studio", "--workers", "1", "--batch-size", "2"]
    assert main(["propagate", *common, "--out", str(tmp_path / "single.json")]) == 0
    for rank in (0, 1):
        assert main(["propagate", *common, "--out", str(tmp_path / "tasks.json"), "--shard", f"{rank}/2"]) == 0
    capsys.readouterr()
    assert main(["propagate-merge", str(tmp_path / "tasks.json"), "--format", "label-studio"]) == 0
    assert "world_size: 2" in capsys.readouterr().out
    assert (tmp_path / "tasks.coco.json").read_bytes() == (tmp_path / "single.coco.json").read_bytes()
    assert (tmp_path / "tasks.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    assert main(["propagate", *common, "--out", str(tmp_path / "x.json"), "--shard", "2/2"]) == 2
    assert "--shard takes RANK/WORLD" in capsys.readouterr().err


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth pattern with noise: structure for the backbone to match, different for every seed."""
    y, x = np.mgrid[0:height, 0:width]
    rings = np.hypot(x - width / 2, y - height / 2) * 4
    pixels = np.stack([(x * (3 + seed) + y) % 256, (y * 5 + seed * 40) % 256, rings % 256], axis=-1)
    return np.clip(pixels + np.random.default_rng(seed).integers(0, 30, pixels.shape), 0, 255).astype(np.uint8)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_processes_write_the_single_process_bytes(tmp_path, capsys):
    """``torchrun --nproc_per_node 2 -m corrmark propagate`` with the zero-shot matcher on 6 small images and a
    broken one: two shards (reading ahead in each), merged by rank 0 into the single-process bytes and summary."""
    Image.fromarray(_picture(120, 96, 0)).save(tmp_path / "annotated.png")
    images = tmp_path / "images"
    images.mkdir()
    for index, (width, height) in enumerate([(120, 96), (100, 100), (140, 90), (96, 128), (110, 80), (90, 90)]):
        Image.fromarray(_picture(width, height, index + 1)).save(images / f"img{index}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "points.json").write_text("[[20, 30], [60, 40], [100, 70], [50, 80]]")
    command = ["propagate", str(images), "--annotated", str(tmp_path / "annotated.png"), "--points",
               str(tmp_path / "points.json"), "--preset", "dinov2-block8", "--image-size", "112", "--device", "cpu",
               "--quiet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each torchrun process: the same arithmetic
    try:
        assert main([*command, "--out", str(tmp_path / "single.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    single = _printed_summary(capsys.readouterr().out)
    source_root = str(Path(corrmark.__file__).resolve().parents[1])
    environment = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    finished = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "corrmark",
         *command, "--out", str(tmp_path / "sharded.json"), "--workers", "1", "--batch-size", "2"],
        env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (tmp_path / "sharded.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    sharded = _printed_summary(finished.stdout)
    assert sharded.pop("world_size") == "2" and sharded.pop("out").endswith("sharded.json")
    for summary in (single, sharded):
        summary.pop("seconds"), summary.pop("out", None)
    assert sharded == single and single["propagated"] == "6" and single["failed"] == "1"
    assert [shard_path(tmp_path / "sharded.json", rank, 2).is_file() for rank in (0, 1)] == [True, True]


def _printed_summary(text: str) -> dict:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line and not line.startswith(" "))
