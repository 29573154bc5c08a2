"""Weights-only export, the model zoo index and loaders, and the demo's use of the zoo: on tiny random-weight models
(EfficientNet-Lite0 stage 2 at 64 px, offline), so every method's loader is exercised in seconds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from corrmark import load_landmark_model, load_matcher
from corrmark.cli import main
from corrmark.errors import CheckpointError, CorrmarkError, UnknownNameError
from corrmark.train.checkpoint import FORMAT, VERSION, capture_rng_state, load_checkpoint, save_checkpoint
from corrmark.train.export import export_weights, file_sha256
from corrmark.zoo import check_zoo_entry, list_zoo, load_zoo_landmarks, load_zoo_matcher

REPO = Path(__file__).resolve().parents[1]
BACKBONE, LAYER, SIZE = "efficientnet_lite0", 2, 64


# --- tiny trained-looking checkpoints (what the Trainer writes: optimizer, scheduler, RNG and all) ------------------


def training_payload(model: torch.nn.Module, config: dict, metrics: dict | None = None) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    sum(parameter.sum() for parameter in model.parameters()).backward()
    optimizer.step()  # fills the Adam moments: the bulk the export drops
    scheduler.step()
    return {"format": FORMAT, "version": VERSION, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": 3, "epoch": 1, "rng": capture_rng_state(), "config": config,
            "metrics": dict(metrics or {}, train_seconds=1.5)}


def sfnet_checkpoint(path: Path) -> Path:
    from corrmark.models.sfnet import SFNetConfig, SFNetFeatures, SFNetHead

    config = SFNetConfig(levels=[[f"{BACKBONE}:{LAYER}"]], image_size=SIZE, kernel_sizes=[3])
    torch.manual_seed(0)
    head = SFNetHead(config, SFNetFeatures(config.levels).level_channels)
    return save_checkpoint(path, training_payload(head, {"method": "sfnet", "model": config.to_dict()}))


def scorrsan_checkpoint(path: Path, mutual: bool = False, selected_head: int = 1) -> Path:
    from corrmark.backbones.descriptors import DescriptorExtractor, parse_backbone_spec
    from corrmark.models.scorrsan import MutualHeads, ScorrsanConfig, ScorrsanHead

    config = ScorrsanConfig(backbone=BACKBONE, layers=[LAYER], image_size=SIZE, sce_kernel=3, channels=8)
    extractor = DescriptorExtractor(parse_backbone_spec(config.backbone, config.layers))
    channels = sum(spec.channels for backbone in extractor.backbones for spec in backbone.feature_specs.values())
    torch.manual_seed(0)
    model = (MutualHeads if mutual else ScorrsanHead)(config, channels, float(extractor.stride))
    experiment = {"method": "scorrsan", "model": config.to_dict(),
                  "model_info": {"in_channels": channels, "stride": float(extractor.stride)}}
    metrics = {"selected_head": selected_head} if mutual else {}
    return save_checkpoint(path, training_payload(model, experiment, metrics))


def jlad_checkpoint(path: Path) -> Path:
    from corrmark.models.jlad import FrozenFeatures, JLADConfig, JLADNet

    config = JLADConfig(backbone=BACKBONE, layers=[LAYER], image_size=SIZE, feature_channels=8, radius=2,
                        num_landmarks=3, detector_channels=8, upsample=2, alignment_channels=4, uncertainty_channels=4)
    torch.manual_seed(0)
    net = JLADNet(config, FrozenFeatures(config).channels)
    return save_checkpoint(path, training_payload(net, {"method": "jlad", "model": config.to_dict()}))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    return {"sfnet": sfnet_checkpoint(folder / "sfnet.pt"), "scorrsan": scorrsan_checkpoint(folder / "scorrsan.pt"),
            "jlad": jlad_checkpoint(folder / "jlad.pt")}


def random_image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


# --- export -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sfnet", "scorrsan", "jlad"])
def test_export_keeps_weights_and_config_and_loads_like_the_original(checkpoints, tmp_path, method):
    original = checkpoints[method]
    exported = export_weights(original, tmp_path / "exported.pt")
    payload = torch.load(exported, map_location="cpu", weights_only=True)
    assert {"optimizer", "scheduler", "rng"}.isdisjoint(payload)
    assert payload["format"] == FORMAT and payload["version"] == VERSION and payload["export"]["weights_only"]
    assert payload["export"]["dropped"] == ["optimizer", "rng", "scheduler"]
    assert payload["config"]["method"] == method and payload["metrics"]["train_seconds"] == 1.5
    assert payload["step"] == 3 and exported.stat().st_size < original.stat().st_size
    source = torch.load(original, map_location="cpu", weights_only=True)["model"]
    assert list(payload["model"]) == list(source)
    assert all(torch.equal(payload["model"][key], source[key]) for key in source)

    image_a, image_b = random_image(48, 56, 0), random_image(40, 60, 1)
    points = np.array([[10.0, 12.0], [30.5, 20.0]])
    before = load_matcher(method, checkpoint=str(original)).transfer_keypoints(image_a, image_b, points)
    after = load_matcher(method, checkpoint=str(exported)).transfer_keypoints(image_a, image_b, points)
    assert np.array_equal(before, after)


def test_exported_jlad_detects_landmarks_like_the_original(checkpoints, tmp_path):
    exported = export_weights(checkpoints["jlad"], tmp_path / "jlad.pt")
    images = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    _, before = load_landmark_model("jlad", checkpoints["jlad"]).detect(images)
    _, after = load_landmark_model("jlad", exported).detect(images)
    assert torch.equal(before, after) and after.shape == (2, 3, 2)


def test_export_keeps_the_selected_head_of_a_mutual_teachers_checkpoint(tmp_path):
    original = scorrsan_checkpoint(tmp_path / "mt.pt", mutual=True, selected_head=1)
    exported = export_weights(original, tmp_path / "mt_export.pt")
    matcher = load_matcher("scorrsan", checkpoint=str(exported))
    state = torch.load(original, weights_only=True)["model"]
    assert torch.equal(matcher.head.fuse.weight, state["heads.1.fuse.weight"])


def test_resuming_from_an_export_is_a_clear_error(checkpoints, tmp_path):
    from corrmark.models.sfnet import SFNetConfig, SFNetFeatures, SFNetHead

    exported = export_weights(checkpoints["sfnet"], tmp_path / "sfnet.pt")
    config = SFNetConfig(levels=[[f"{BACKBONE}:{LAYER}"]], image_size=SIZE, kernel_sizes=[3])
    head = SFNetHead(config, SFNetFeatures(config.levels).level_channels)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(exported, head, torch.optim.Adam(head.parameters()))


def test_export_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        export_weights(tmp_path / "none.pt", tmp_path / "out.pt")
    torch.save({"format": "someone-else", "model": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="someone-else"):
        export_weights(tmp_path / "foreign.pt", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_cli_export_prints_size_and_checksum(checkpoints, tmp_path, capsys):
    out = tmp_path / "zoo" / "jlad.pt"
    assert main(["export", str(checkpoints["jlad"]), str(out)]) == 0
    assert file_sha256(out) in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing.pt"), str(out)]) == 2
    assert "missing.pt" in capsys.readouterr().err


# --- the zoo index --------------------------------------------------------------------------------------------------


def test_the_checked_in_index_is_complete():
    entries = list_zoo(REPO / "zoo")
    assert {entry.name for entry in entries} >= {"sfnet_cub", "scorrsan_pfwillow_st", "jlad_mtfl_k10"}
    for entry in entries:
        assert (REPO / entry.config).is_file(), entry.config
        assert all((REPO / result).is_file() for result in entry.results), entry.results
        assert entry.metrics and all(isinstance(value, (int, float)) for value in entry.metrics.values())
        assert entry.file.endswith(".pt") and entry.path.parent == REPO / "zoo"
    examples = json.loads((REPO / "examples" / "pairs.json").read_text())
    bundled = {image for pair in examples["pairs"] for image in (pair["source"], pair["target"])}
    assert all(set(entry.trained_on_examples) <= bundled for entry in entries)


def write_zoo(folder: Path, models: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zoo.yaml").write_text(yaml.safe_dump({"format": "corrmark-zoo", "version": 1, "models": models}))
    return folder


def zoo_record(name, method, kind, **extra):
    return {"name": name, "method": method, "kind": kind, "file": f"{name}.pt", "config": "configs/x.yaml",
            "data": "tiny random", "train_minutes": 0.1, "metrics": {"PCK@0.1": 0.5}, "notes": "test model", **extra}


@pytest.fixture(scope="module")
def tiny_zoo(checkpoints, tmp_path_factory):
    folder = write_zoo(tmp_path_factory.mktemp("zoo"), [
        zoo_record("tiny_sfnet", "sfnet", "matcher"), zoo_record("tiny_scorrsan", "scorrsan", "matcher"),
        zoo_record("tiny_jlad", "jlad", "landmarks", category="face"), zoo_record("absent", "scorrsan", "matcher"),
    ])
    for name, method in (("tiny_sfnet", "sfnet"), ("tiny_scorrsan", "scorrsan"), ("tiny_jlad", "jlad")):
        export_weights(checkpoints[method], folder / f"{name}.pt")
    return folder


def test_zoo_loads_by_name_and_lists_missing_files(tiny_zoo, monkeypatch):
    monkeypatch.setenv("CORRMARK_ZOO", str(tiny_zoo))
    available = {entry.name: entry.available for entry in list_zoo()}
    assert available == {"tiny_sfnet": True, "tiny_scorrsan": True, "tiny_jlad": True, "absent": False}
    image = random_image(40, 52, 3)
    assert load_zoo_matcher("tiny_sfnet").estimate_mapping(image, image).shape == (40, 52, 2)
    assert load_zoo_matcher("tiny_scorrsan").name == "scorrsan"
    _, points = load_zoo_landmarks("tiny_jlad").detect(torch.rand(1, 3, 40, 52))
    assert points.shape == (1, 3, 2)
    with pytest.raises(CheckpointError, match="corrmark export"):
        load_zoo_matcher("absent")
    with pytest.raises(UnknownNameError, match="tiny_sfnet"):
        load_zoo_matcher("no_such_model")


def test_zoo_checks_the_sha256_when_the_index_gives_one(checkpoints, tmp_path):
    folder = write_zoo(tmp_path, [zoo_record("good", "jlad", "landmarks", sha256="0" * 64)])
    export_weights(checkpoints["jlad"], folder / "good.pt")
    with pytest.raises(CheckpointError, match="sha256"):
        load_zoo_landmarks("good", folder=folder)
    write_zoo(tmp_path, [zoo_record("good", "jlad", "landmarks", sha256=file_sha256(folder / "good.pt"))])
    assert load_zoo_landmarks("good", folder=folder).describe()["num_landmarks"] == 3


def test_zoo_entry_options_reach_the_loader_and_the_caller_overrides_them(checkpoints, tmp_path):
    folder = write_zoo(tmp_path, [zoo_record("mutual", "sfnet", "matcher", options={"test_mutual": True})])
    export_weights(checkpoints["sfnet"], folder / "mutual.pt")
    assert load_zoo_matcher("mutual", folder=folder).config.test_mutual is True
    assert load_zoo_matcher("mutual", folder=folder, test_mutual=False).config.test_mutual is False
    assert check_zoo_entry(list_zoo(folder)[0]) == "loads"


@pytest.mark.parametrize("record, message", [
    ({"name": "x"}, "lacks"),
    (zoo_record("x", "sfnet", "matcher", options=[1]), "options must be a mapping"),
    (zoo_record("x", "resnet", "matcher"), "method 'resnet'"),
    (zoo_record("x", "sfnet", "matcher", file="../outside.pt"), "inside the zoo folder"),
    (zoo_record("x", "sfnet", "matcher", colour="red"), "unknown field"),
    (zoo_record("x", "sfnet", "matcher", sha256=10 ** 63), "64 hex digits in quotes"),  # unquoted digits: an int
    (zoo_record("x", "sfnet", "matcher", sha256="abc"), "64 hex digits"),
    (zoo_record("x", "sfnet", "matcher", url="https://example.org/x.pt"), "no sha256"),
])
def test_a_malformed_index_is_one_clear_error(tmp_path, record, message):
    write_zoo(tmp_path, [record])
    with pytest.raises(CorrmarkError, match=message):
        list_zoo(tmp_path)


def test_cli_zoo_lists_and_checks(tiny_zoo, capsys):
    assert main(["zoo", "--folder", str(tiny_zoo), "--check"]) == 0
    lines = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines == {"tiny_sfnet": "loads", "tiny_scorrsan": "loads", "tiny_jlad": "loads", "absent": "missing"}


# --- the demo with a zoo --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_examples(tmp_path):
    """A pair of 'cars' and one 'face' image (pairs.json's optional ``images`` list)."""
    folder = tmp_path / "examples"
    (folder / "images").mkdir(parents=True)
    for name, seed in (("a.png", 0), ("b.png", 1), ("face.png", 2)):
        Image.fromarray(random_image(48, 64, seed)).save(folder / "images" / name)
    points = [[10.0, 10.0], [30.0, 20.0], [50.0, 40.0]]
    (folder / "pairs.json").write_text(json.dumps({
        "pairs": [{"category": "car", "source": "images/a.png", "target": "images/b.png", "source_points": points,
                   "target_points": points}],
        "images": [{"image": "images/face.png", "category": "face"}]}))
    return folder


def test_demo_shows_trained_matchers_and_landmarks_and_notes_missing_weights(tiny_zoo, tiny_examples, tmp_path,
                                                                             monkeypatch):
    from corrmark.demo import run_demo

    monkeypatch.setenv("CORRMARK_ZOO", str(tiny_zoo))
    monkeypatch.setenv("CORRMARK_EXAMPLES", str(tiny_examples))
    report = run_demo(tmp_path / "demo", progress=False, matchers=["tiny_sfnet", "tiny_scorrsan", "absent"])
    html = report.read_text()
    assert "Skipped trained matcher absent" in html
    for name in ("p0_tiny_sfnet.jpg", "p0_tiny_scorrsan.jpg", "landmarks_tiny_jlad_0.jpg"):
        assert (tmp_path / "demo" / name).is_file() and f'src="{name}"' in html
    assert 'id="summary"' in html and 'id="zoo"' in html and "tiny random" in html
    html = run_demo(tmp_path / "plain", progress=False, matchers=["tiny_sfnet"], trained=False).read_text()
    assert "left out on request" in html and "landmarks_tiny_jlad" not in html


def test_demo_notes_a_landmark_model_without_images_of_its_category(tiny_zoo, tiny_examples, tmp_path, monkeypatch):
    from corrmark.demo import run_demo

    document = json.loads((tiny_examples / "pairs.json").read_text())
    del document["images"]
    (tiny_examples / "pairs.json").write_text(json.dumps(document))
    monkeypatch.setenv("CORRMARK_ZOO", str(tiny_zoo))
    monkeypatch.setenv("CORRMARK_EXAMPLES", str(tiny_examples))
    html = run_demo(tmp_path / "demo", progress=False, matchers=["tiny_sfnet"]).read_text()
    assert "tiny_jlad (jlad) was trained on face images and the bundled examples hold none" in html
    assert "landmarks_" not in html


def test_demo_without_a_zoo_shows_zero_shot_only(tiny_examples, tmp_path, monkeypatch):
    from corrmark.demo import run_demo

    monkeypatch.setenv("CORRMARK_ZOO", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CORRMARK_EXAMPLES", str(tiny_examples))
    monkeypatch.setattr("corrmark.demo.ZERO_SHOT", {"tiny-nn": ("tiny zero-shot", {
        "backbone": BACKBONE, "layers": [LAYER], "image_size": SIZE})})
    html = run_demo(tmp_path / "demo", progress=False).read_text()
    assert "No trained models shown" in html and "tiny zero-shot" in html
    with pytest.raises(UnknownNameError, match="tiny-nn"):
        run_demo(tmp_path / "demo", progress=False, matchers=["nope"])


def test_zoo_downloads_missing_weights_only_when_allowed_and_checks_them(checkpoints, tmp_path, monkeypatch):
    published = tmp_path / "published" / "remote.pt"
    published.parent.mkdir()
    export_weights(checkpoints["jlad"], published)
    folder = write_zoo(tmp_path / "zoo", [zoo_record("remote", "jlad", "landmarks", url=published.as_uri(),
                                                     sha256=file_sha256(published))])
    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CORRMARK_ALLOW_DOWNLOAD", raising=False)
    assert not list_zoo(folder)[0].available
    with pytest.raises(CheckpointError, match="CORRMARK_ALLOW_DOWNLOAD=1"):
        load_zoo_landmarks("remote", folder=folder)
    monkeypatch.setenv("CORRMARK_ALLOW_DOWNLOAD", "1")
    assert load_zoo_landmarks("remote", folder=folder).describe()["num_landmarks"] == 3
    assert (tmp_path / "cache" / "zoo" / "remote.pt").is_file() and list_zoo(folder)[0].available
    write_zoo(tmp_path / "zoo", [zoo_record("remote", "jlad", "landmarks", url=published.as_uri(), sha256="1" * 64)])
    with pytest.raises(CheckpointError, match="sha256"):  # a cached download is checked like a local file
        load_zoo_landmarks("remote", folder=folder)
