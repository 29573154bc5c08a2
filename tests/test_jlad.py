"""JLAD model, training step, alternation schedule and trainer integration, on tiny random networks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from corrmark.cache import FeatureBank
from corrmark.config import check_known_keys
from corrmark.models.jlad import JLADConfig, JLADNet, landmark_probabilities
from corrmark.ops import pixel_grid, spatial_expectation
from corrmark.train.jlad import (DATA_KEYS, STAGES, JLADBatches, JLADSchedule, JLADStep, build_experiment, loss_options,
                                 set_trainable)
from corrmark.train.runner import load_config
from corrmark.train.trainer import Trainer

TINY = {"feature_channels": 8, "radius": 2, "num_landmarks": 3, "detector_channels": 8, "upsample": 2,
        "alignment_channels": 4, "uncertainty_channels": 4}


def tiny_net(**overrides) -> JLADNet:
    torch.manual_seed(0)
    return JLADNet(JLADConfig(**{**TINY, **overrides}), 6)


def tiny_bank(images=6, views=2, channels=6, grid=6, groups=1) -> FeatureBank:
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(images, channels, grid, grid, generator=generator)
    features, mappings = [], []
    for image in range(images):
        for view in range(views):
            shift = view  # view v is view 0 shifted by v cells to the left: view cell x reads view-0 cell x + v
            features.append(torch.roll(base[image], -shift, dims=2))
            mappings.append(pixel_grid(grid, grid) + torch.tensor([float(shift), 0.0]))
    return FeatureBank(features=torch.stack(features).half(), mappings=torch.stack(mappings),
                       groups=torch.arange(images) % groups, shapes=torch.full((images, 2), 100),
                       paths=[f"image{i}.png" for i in range(images)], views=views, size=84, meta={"images": images})


def tiny_config(pretrain=2, stage=2, rounds=1, batch=2, steps_per_epoch=3):
    return {"method": "jlad", "seed": 0, "model": dict(TINY),
            "data": {"batch_size": batch, "steps_per_epoch": steps_per_epoch},
            "schedule": {"pretrain_steps": pretrain, "stage_steps": stage, "rounds": rounds},
            "train": {"lr": 1e-3}}


# --- model ----------------------------------------------------------------------------------------------------------


def test_eq4_softmax_over_channels_and_eq5_expected_coordinates():
    scores = torch.full((1, 3, 4, 5), -30.0, dtype=torch.float64)
    scores[0, 0] = 0.0  # background wins everywhere but where landmarks peak
    scores[0, 1, 2, 3] = 30.0
    scores[0, 2, 1, 0] = 30.0
    psi = landmark_probabilities(scores)
    assert psi.shape == (1, 2, 4, 5)
    total = torch.softmax(scores, dim=1).sum(dim=1)
    torch.testing.assert_close(total, torch.ones_like(total))
    points = spatial_expectation(psi, normalize_mass=True)  # what JLADNet.detect uses
    torch.testing.assert_close(points, torch.tensor([[[3.0, 2.0], [0.0, 1.0]]], dtype=torch.float64), atol=1e-6,
                               rtol=0)


def fingerprint(tensor: torch.Tensor) -> list[float]:
    """First three values, sum and a position-weighted sum (catches permutations) of a tensor."""
    values = tensor.detach().double().flatten()
    weights = torch.linspace(1.0, 2.0, values.numel(), dtype=torch.float64)
    return [*values[:3].tolist(), float(values.sum()), float((values * weights).sum())]


#: JLADNet outputs computed before the ops refactor (issue 19), when JLAD had its own windowed correlation, window
#: soft argmax and eq. (5) expectation; the refactored model gave bit-identical tensors on the machine that made them
JLAD_GOLDEN = {
    "correlation": [0.0, 0.0, 0.0, 200.92279165018408, 300.1954216631473],
    "tau": [-0.01862366497516632, 1.399949312210083, 1.9421722888946533, 454.3534665387124, 697.6371131514696],
    "log_sigma": [-0.0678456500172615, -0.06759610772132874, -0.0784291923046112, -6.334689408540726,
                  -9.463955189224826],
    "psi": [0.30435800552368164, 0.3073578476905823, 0.3076392412185669, 270.66800217330456, 402.21086206842796],
    "points": [5.522395610809326, 6.476820945739746, 5.498574733734131, 72.00421714782715, 108.27341413497925],
    "points_normalized": [0.0016013383865356445, -0.0037158727645874023, 0.0002014636993408203,
                          0.0029039978981018066, 0.0046524026177146224],
    "gradient": [-21.74191665649414, 16.640583038330078, -19.622556686401367, 10629.961000954267,
                 11678.384853873165],
}


def test_forward_and_gradients_reproduce_the_numbers_before_the_ops_refactor():
    net = tiny_net()
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():  # W_A and W_C start with zero outputs: perturb every weight so that they count
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    frozen_s = torch.randn(2, 6, 7, 6, generator=generator)  # a non-square grid
    frozen_t = torch.randn(2, 6, 7, 6, generator=generator)
    out = net(frozen_s, frozen_t)
    (out["tau"].pow(2).sum() + out["detection_s"]["points"].pow(2).sum()).backward()
    gradient = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    outputs = {"correlation": out["correlation"], "tau": out["tau"], "log_sigma": out["log_sigma"],
               "psi": out["detection_s"]["psi"], "points": out["detection_s"]["points"],
               "points_normalized": out["detection_t"]["points_normalized"], "gradient": gradient}
    for name, tensor in outputs.items():
        assert fingerprint(tensor) == pytest.approx(JLAD_GOLDEN[name], rel=1e-5, abs=1e-5), name


def test_forward_shapes_and_identity_alignment_at_start():
    net = tiny_net()
    frozen = torch.randn(2, 6, 6, 6)
    out = net(frozen, frozen)
    assert out["features_s"].shape == (2, 8, 6, 6)
    torch.testing.assert_close(out["features_s"].norm(dim=1), torch.ones(2, 6, 6))
    assert out["correlation"].shape == (2, 25, 6, 6)
    assert out["tau"].shape == (2, 6, 6, 2) and out["log_sigma"].shape == (2, 1, 6, 6)
    assert out["detection_s"]["psi"].shape == (2, 3, 12, 12)
    assert out["detection_s"]["points"].shape == (2, 3, 2)
    assert float(out["log_sigma"].detach().abs().max()) == 0.0  # sigma starts at 1
    # W_A starts at zero output: tau = identity + the window soft argmax, which stays inside the window
    identity = pixel_grid(6, 6)[None]
    assert float((out["tau"].detach() - identity).abs().max()) <= 2.0


@pytest.mark.parametrize("stage, trained", [("pretrain", {"F", "A", "D"}), ("align", {"F", "A", "C"}),
                                            ("detect", {"F", "D"})])
def test_gradient_flow_per_stage(stage, trained):
    net = tiny_net()
    bank = tiny_bank()
    batches = JLADBatches(bank, JLADSchedule(1, 1, 1), batch_size=2, steps_per_epoch=3)
    batch = next(b for b in batches.batches(0, 0) if int(b["stage"]) == ("pretrain", "align", "detect").index(stage))
    net.zero_grad(set_to_none=True)
    losses = JLADStep(loss_options({}, 3))(net, batch)
    losses["loss"].backward()
    for name, module in net.subnetworks().items():
        has_grad = any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())
        assert has_grad == (name in trained), (stage, name)


def test_uncertainty_and_self_similarity_ablations_build():
    net = tiny_net(uncertainty=False, self_similarity=False)
    assert net.subnetworks()["C"] is None
    out = net(torch.randn(1, 6, 6, 6), torch.randn(1, 6, 6, 6))
    assert float(out["log_sigma"].detach().abs().max()) == 0.0
    set_trainable(net, "align")  # skips the missing module


def test_schedule_stages():
    schedule = JLADSchedule(pretrain_steps=3, stage_steps=2, rounds=2)
    assert schedule.total_steps == 11
    stages = [schedule.stage(step) for step in range(11)]
    assert stages[:3] == [("pretrain", 0)] * 3
    assert stages[3:7] == [("align", 1)] * 2 + [("detect", 1)] * 2
    assert stages[7:] == [("align", 2)] * 2 + [("detect", 2)] * 2
    with pytest.raises(Exception):
        JLADSchedule(rounds=5)


def test_batches_are_deterministic_and_follow_the_schedule():
    bank = tiny_bank(groups=2)
    batches = JLADBatches(bank, JLADSchedule(2, 1, 1), batch_size=3, steps_per_epoch=4)
    first, second = list(batches.batches(5, 0)), list(batches.batches(5, 0))
    assert [int(b["stage"]) for b in first] == [0, 0, 1, 2]
    for a, b in zip(first, second):
        key = "synthetic" if "synthetic" in a else "pair"
        torch.testing.assert_close(a[key]["source"], b[key]["source"])
    synthetic = first[0]["synthetic"]
    # the synthetic pair's true field maps the warped view onto view 0 (here: a shift of one cell)
    assert synthetic["tau_true"].shape == (3, 6, 6, 2)
    torch.testing.assert_close(synthetic["tau_true"][..., 0] - pixel_grid(6, 6)[..., 0], torch.ones(3, 6, 6))


def test_anchor_batches_leave_the_pretraining_batches_unchanged():
    """``synthetic_batch`` only adds a synthetic batch to alternation steps, and a run with ``rounds: 0`` sees the
    same pretraining batches: so runs that differ only there share their pretraining steps exactly."""
    bank = tiny_bank(groups=2)
    plain = list(JLADBatches(bank, JLADSchedule(2, 1, 1), batch_size=3, steps_per_epoch=4).batches(5, 0))
    anchored = list(JLADBatches(bank, JLADSchedule(2, 1, 1), batch_size=3, steps_per_epoch=4,
                                synthetic_batch=2).batches(5, 0))
    synthetic_only = list(JLADBatches(bank, JLADSchedule(4, 1, 0), batch_size=3, steps_per_epoch=4).batches(5, 0))
    assert [int(b["stage"]) for b in synthetic_only] == [0, 0, 0, 0]
    for step in range(2):
        for other in (anchored, synthetic_only):
            torch.testing.assert_close(other[step]["synthetic"]["source"], plain[step]["synthetic"]["source"])
    assert "synthetic" not in plain[2] and anchored[2]["synthetic"]["source"].shape[0] == 2
    assert anchored[2]["pair"]["source"].shape[0] == 3


def test_anchor_weight_adds_the_synthetic_losses_to_the_joint_loss():
    bank = tiny_bank(groups=2)
    batch = list(JLADBatches(bank, JLADSchedule(0, 1, 1), batch_size=2, steps_per_epoch=1,
                             synthetic_batch=2).batches(0, 0))[0]
    assert STAGES[int(batch["stage"])] == "align"
    values = {}
    for weight in (0.0, 2.5):
        net = tiny_net()
        step = JLADStep(loss_options({"synthetic_weight": weight}, 3))
        values[weight] = step(net, batch)
    synthetic = JLADStep(loss_options({}, 3)).synthetic_losses(tiny_net(), batch["synthetic"])["loss"]
    assert "synthetic" not in values[0.0]
    torch.testing.assert_close(values[2.5]["loss"] - values[0.0]["loss"], 2.5 * synthetic)


# --- training through the common trainer --------------------------------------------------------------------------


def _trainer(tmp_path, name, config):
    experiment = build_experiment(config, bank=tiny_bank())
    return Trainer(experiment.model, experiment.optimizer_factory, experiment.step, experiment.data, tmp_path / name,
                   max_steps=experiment.max_steps, seed=0, scheduler_factory=experiment.scheduler_factory,
                   grad_clip=experiment.grad_clip, config=config, progress=False, checkpoint_every=2)


def test_one_alternation_round_on_a_tiny_model(tmp_path):
    trainer = _trainer(tmp_path, "run", tiny_config(pretrain=2, stage=2, rounds=1))
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    final = trainer.fit()
    assert final.name == "final.pt" and trainer.step == 6
    rows = [line for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows
    after = trainer.model.state_dict()
    for prefix in ("feature_layers", "alignment", "uncertainty", "detector"):
        changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
        assert changed, prefix


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    config = tiny_config(pretrain=2, stage=2, rounds=1, steps_per_epoch=4)
    straight = _trainer(tmp_path, "straight", config)
    straight.fit()
    interrupted = _trainer(tmp_path, "sliced", config)
    interrupted.fit(stop_after=3)  # stops inside the alignment stage
    resumed = _trainer(tmp_path, "sliced", config)
    resumed.fit(resume=True)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_runner_registration():
    from corrmark.train import METHODS

    assert "jlad" in METHODS


# --- wrappers: Matcher and LandmarkModel from a checkpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight JLAD checkpoint on EfficientNet-Lite0 stage 2 (fast, offline)."""
    from corrmark.models.jlad import FrozenFeatures
    from corrmark.train.checkpoint import save_checkpoint

    config = JLADConfig(backbone="efficientnet_lite0", layers=[2], image_size=64, **TINY)
    try:
        frozen = FrozenFeatures(config)
    except Exception as error:  # offline weights unavailable on this machine
        pytest.skip(f"EfficientNet-Lite0 weights unavailable: {error}")
    torch.manual_seed(0)
    net = JLADNet(config, frozen.channels)
    path = tmp_path_factory.mktemp("jlad") / "final.pt"
    save_checkpoint(path, {"model": net.state_dict(), "config": {"method": "jlad", "model": config.to_dict()}})
    return path


def test_landmark_model_and_matcher_from_checkpoint(tiny_checkpoint):
    from corrmark import load_landmark_model, load_matcher

    model = load_landmark_model("jlad", tiny_checkpoint)
    images = torch.rand(2, 3, 50, 70)
    heatmaps, points = model.detect(images)
    assert heatmaps.shape[:2] == (2, 3) and points.shape == (2, 3, 2)
    assert bool(((points[..., 0] >= -0.5) & (points[..., 0] <= 69.5)).all())
    assert bool(((points[..., 1] >= -0.5) & (points[..., 1] <= 49.5)).all())
    assert model.describe()["num_landmarks"] == 3

    matcher = load_matcher("jlad", checkpoint=tiny_checkpoint)
    rng = np.random.default_rng(0)
    source = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    target = (rng.random((30, 50, 3)) * 255).astype(np.uint8)
    mapping = matcher.estimate_mapping(source, target)
    assert mapping.shape == (30, 50, 2) and np.isfinite(mapping).all()


def test_unknown_landmark_model_and_missing_checkpoint():
    from corrmark import load_landmark_model
    from corrmark.errors import CheckpointError, UnknownNameError

    with pytest.raises(UnknownNameError):
        load_landmark_model("nope", "x.pt")
    with pytest.raises(CheckpointError):
        load_landmark_model("jlad", None)
    with pytest.raises(CheckpointError):
        load_landmark_model("jlad", "/nonexistent/final.pt")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("jlad_*.yaml")),
                         ids=lambda path: path.stem)
def test_checked_in_jlad_configs_parse(path):
    """A typo in a checked-in config (an unknown model, schedule, loss or data key) fails here, not an hour into a
    feature bank."""
    config = load_config(path)
    assert config["method"] == "jlad" and config["name"] == path.stem
    model = JLADConfig.from_dict(config.get("model"))
    JLADSchedule.from_dict(config.get("schedule"))
    loss_options(config.get("loss"), model.num_landmarks)
    check_known_keys(config.get("data"), DATA_KEYS, "JLAD data")


def test_unknown_data_option_is_an_error_that_names_it():
    config = tiny_config()
    config["data"]["synthetic_batchh"] = 8
    with pytest.raises(Exception, match="synthetic_batchh"):
        build_experiment(config, bank=tiny_bank())


def test_feature_bank_from_data_sources_is_cached_in_its_stored_layout(tmp_path, monkeypatch):
    """Sources -> images -> frozen features of every view: the stored layout of every JLAD bank so far (banks already
    on disk must stay readable), view 0's mapping the identity, and a second call loads the same bank."""
    timm = pytest.importorskip("timm")
    from PIL import Image

    from corrmark.train.jlad import build_bank, collect_training_images

    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path / "cache"))
    for index, (category, height) in enumerate([("a", 40), ("a", 44), ("b", 48)]):
        (tmp_path / "images" / category).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(index).integers(0, 255, (height, 52, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / category / f"{index}.png")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    config = JLADConfig(backbone="timm:resnet18", layers=[2], image_size=64, **TINY)
    items = collect_training_images([{"dataset": "image-folder", "root": str(tmp_path / "images"),
                                      "group": "@category"}], 0)
    options = {"views": 2, "device": "cpu", "weights_files": {"timm:resnet18": str(weights)}, "progress": False}
    bank = build_bank(config, items, **options)
    (entry,) = (tmp_path / "cache" / "jlad_features").glob("*.pt")
    assert list(torch.load(entry, weights_only=True)) == ["features", "mappings", "groups", "shapes", "paths", "views",
                                                          "size", "meta"]
    assert bank.features.shape[0] == 6 and bank.features.dtype == torch.float16 and bank.views == 2
    assert bank.groups.tolist() == [0, 0, 1] and bank.meta["groups"] == ["image-folder/a", "image-folder/b"]
    assert bank.shapes.tolist() == [[40, 52], [44, 52], [48, 52]] and bank.paths == [item.path for item in items]
    grid = tuple(bank.mappings.shape[1:3])
    torch.testing.assert_close(bank.mappings[bank.rows([0, 1, 2])], pixel_grid(*grid).expand(3, *grid, 2))
    again = build_bank(config, items, **{**options, "weights_files": None})  # from the cache: no backbone needed
    assert torch.equal(again.features, bank.features) and torch.equal(again.mappings, bank.mappings)
