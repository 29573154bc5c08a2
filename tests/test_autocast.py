"""Mixed precision (``precision=`` / ``train.precision`` / ``--precision``), all on the CPU: CPU autocast runs bf16
(and, in torch 2.14, fp16 too), so the code paths a GPU takes are exercised here; benchmarks/gpu_check.py measures a
GPU.

Keypoint tolerance: bf16 against fp32, median distance <= 2 px (the one benchmarks/gpu_check.py states and explains:
only the per-image forward runs at reduced precision, correlation and soft argmax stay float32)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_sfnet import random_levels, tiny_head
from test_train_trainer import ToyData, states_equal, toy_model, toy_step

from corrmark import load_landmark_model, load_matcher, read_image
from corrmark.cache import DescriptorCache
from corrmark.cli import build_parser, main, matcher_options
from corrmark.device import autocast, check_precision, grad_scaler
from corrmark.errors import CorrmarkError
from corrmark.losses import sfnet_loss
from corrmark.train import Trainer, read_checkpoint, register_method, run_config
from corrmark.train.runner import Experiment

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TOLERANCE_PX = 2.0


@pytest.fixture(scope="module")
def pair():
    """The first bundled pair (cars, 300 px wide): source image, target image, source keypoints (10, 2)."""
    listed = json.loads((EXAMPLES / "pairs.json").read_text())["pairs"][0]
    return (read_image(EXAMPLES / listed["source"]), read_image(EXAMPLES / listed["target"]),
            np.asarray(listed["source_points"], dtype=float))


def small_nn(**options):
    return load_matcher("nn", backbone="efficientnet_lite0", image_size=64, **options)


def record_dtypes(module: torch.nn.Module) -> list:
    """The output dtypes of ``module``'s forward calls, appended as they happen."""
    seen = []
    module.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    return seen


def first(model: torch.nn.Module, kind: type) -> torch.nn.Module:
    return next(module for module in model.modules() if isinstance(module, kind))


def median_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)))


# --- the foundation helper ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["fp64", "half", "", 16, ["bf16"]])
def test_a_bad_precision_name_is_one_clear_error(bad):
    with pytest.raises(CorrmarkError, match=r"unknown precision .*; use fp32, bf16, fp16$"):
        check_precision(bad)


def test_names_and_the_default():
    assert [check_precision(name) for name in (None, "fp32", " BF16 ", "fp16")] == ["fp32", "fp32", "bf16", "fp16"]


def test_cpu_autocast_runs_bf16_and_fp16_and_fp32_is_no_autocast():
    layer = torch.nn.Linear(4, 4)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with autocast("cpu", precision):
            assert layer(torch.randn(2, 4)).dtype == dtype
            assert torch.is_autocast_enabled("cpu") == (precision != "fp32")


def test_an_unsupported_device_or_dtype_is_one_error_not_a_silent_fp32_run(monkeypatch):
    with pytest.raises(CorrmarkError, match="precision bf16 is not supported on meta"):
        with autocast("meta", "bf16"):
            pass
    # torch's answer to a dtype its autocast cannot run on a device: a warning, and autocast switched off
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *device_type: False)
    with pytest.raises(CorrmarkError, match="precision fp16 is not supported on cpu"):
        with autocast("cpu", "fp16"):
            pass


def test_only_fp16_training_gets_a_loss_scaler():
    assert grad_scaler("cpu", "fp32") is None and grad_scaler("cpu", "bf16") is None
    assert isinstance(grad_scaler("cpu", "fp16"), torch.amp.GradScaler)


# --- inference ------------------------------------------------------------------------------------------------------


def test_models_refuse_a_bad_precision():
    with pytest.raises(CorrmarkError, match="unknown precision 'fp64'"):
        small_nn(precision="fp64")
    matcher = small_nn()
    with pytest.raises(CorrmarkError, match="unknown precision 'fp8'"):
        matcher.precision = "fp8"
    assert matcher.precision == "fp32"
    with pytest.raises(CorrmarkError, match="unknown precision 'int8'"):
        load_landmark_model("jlad", REPO / "zoo" / "jlad_cub_k10.pt", precision="int8")


def test_fp32_is_the_default_and_runs_without_autocast_bit_identically(pair):
    plain, explicit = small_nn(), small_nn(precision="fp32")
    seen, inside = record_dtypes(first(plain.extractor, torch.nn.Conv2d)), []
    first(plain.extractor, torch.nn.Conv2d).register_forward_hook(
        lambda *_: inside.append(torch.is_autocast_enabled("cpu")))
    assert np.array_equal(plain.transfer_keypoints(*pair), explicit.transfer_keypoints(*pair))
    assert np.array_equal(plain.estimate_mapping(*pair[:2]), explicit.estimate_mapping(*pair[:2]))
    assert set(seen) == {torch.float32} and not any(inside)
    assert plain.describe() == explicit.describe() and "precision" not in plain.describe()  # records as before


def test_bf16_runs_the_backbone_in_bf16_and_keypoints_stay_close(pair):
    matcher = load_matcher("nn", backbone="dinov2_vits14", image_size=168)
    seen = record_dtypes(first(matcher.extractor, torch.nn.Linear))  # a Linear inside the ViT
    reference, reference_mapping = matcher.transfer_keypoints(*pair), matcher.estimate_mapping(*pair[:2])
    assert set(seen) == {torch.float32}
    seen.clear()
    matcher.precision = "bf16"
    points, mapping = matcher.transfer_keypoints(*pair), matcher.estimate_mapping(*pair[:2])
    assert set(seen) == {torch.bfloat16}
    assert points.dtype == np.float64 and mapping.dtype == np.float32  # what users get is unchanged
    assert not np.array_equal(points, reference) and median_distance(points, reference) <= TOLERANCE_PX
    assert median_distance(mapping, reference_mapping) <= TOLERANCE_PX
    assert matcher.describe()["precision"] == "bf16"


@pytest.mark.parametrize("name, options, learned", [
    ("sfnet", {"checkpoint": "sfnet_general.pt", "image_size": 112}, lambda m: first(m.head, torch.nn.Conv2d)),
    ("scorrsan", {"checkpoint": "scorrsan_pfwillow_st.pt"}, lambda m: m.head.fuse),
    ("jlad", {"checkpoint": "jlad_cub_k10.pt"}, lambda m: m.runtime.net.feature_layers.reduce),
])
def test_trained_matchers_run_their_learned_layers_in_bf16(pair, name, options, learned):
    checkpoint = REPO / "zoo" / options.pop("checkpoint")
    if not checkpoint.is_file():
        pytest.skip(f"zoo file {checkpoint.name} absent")
    reference = load_matcher(name, checkpoint=checkpoint, **options).transfer_keypoints(*pair)
    matcher = load_matcher(name, checkpoint=checkpoint, precision="bf16", **options)
    seen = record_dtypes(learned(matcher))
    points = matcher.transfer_keypoints(*pair)
    assert seen and set(seen) == {torch.bfloat16}
    assert points.dtype == np.float64 and median_distance(points, reference) <= TOLERANCE_PX
    assert matcher.describe()["precision"] == "bf16"


def test_jlad_landmarks_detect_in_bf16_and_return_float32():
    checkpoint = REPO / "zoo" / "jlad_cub_k10.pt"
    if not checkpoint.is_file():
        pytest.skip("zoo file jlad_cub_k10.pt absent")
    image = read_image(EXAMPLES / "images" / "bird_Blue_Jay_0031.jpg")
    images = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    model = load_landmark_model("jlad", checkpoint)
    _, reference = model.detect(images)
    model.precision = "bf16"
    net = model.runtime.net
    learned, detector = record_dtypes(net.feature_layers.reduce), record_dtypes(net.detector)
    heatmaps, points = model.detect(images)
    assert learned == [torch.bfloat16] and detector == [torch.float32]  # W_D works on float32 features
    assert heatmaps.dtype == points.dtype == torch.float32
    assert median_distance(points[0].numpy(), reference[0].numpy()) <= TOLERANCE_PX


def test_a_descriptor_cached_at_fp32_is_not_served_at_bf16(pair):
    matcher = small_nn()
    described = record_dtypes(matcher.extractor)
    first_points = matcher.transfer_keypoints(*pair)
    assert len(described) == 2  # source and target
    matcher.precision = "bf16"
    matcher.transfer_keypoints(*pair)
    assert len(described) == 4  # described again, in bf16: the fp32 entries were not served
    matcher.precision = "fp32"
    assert np.array_equal(matcher.transfer_keypoints(*pair), first_points) and len(described) == 4  # fp32 cached
    assert len(matcher._cache) == 4


def test_the_descriptor_cache_keys_on_the_variant():
    cache, image = DescriptorCache(4), np.zeros((2, 2, 3), np.uint8)
    assert cache.get_or_compute(image, lambda: "fp32 descriptor", "fp32") == "fp32 descriptor"
    assert cache.get_or_compute(image, lambda: "bf16 descriptor", "bf16") == "bf16 descriptor"
    assert cache.get_or_compute(image, lambda: "computed again", "fp32") == "fp32 descriptor"


# --- training -------------------------------------------------------------------------------------------------------


class RepeatedBatch:
    """The same batch every step (a BatchSource)."""

    def __init__(self, batch, count: int = 5):
        self.batch, self.count = batch, count

    def __len__(self):
        return self.count

    def batches(self, seed, epoch):
        yield from [self.batch] * self.count


def translated_pair_batch() -> dict:
    """The translated, noisy pair of tests/test_sfnet.py's few-step training, as one batch."""
    generator = torch.Generator().manual_seed(0)
    source = random_levels(4, generator)
    target = [torch.roll(level, shifts=2 if level.shape[-1] == 8 else 1, dims=-1)
              + 1.5 * torch.randn(level.shape, generator=generator) for level in source]
    mask_s = torch.zeros(4, 1, 8, 8)
    mask_s[:, :, 2:6, 1:5] = 1
    return {"source": source, "target": target, "mask_s": mask_s, "mask_t": torch.roll(mask_s, 2, dims=-1)}


def sfnet_step(head, batch) -> dict:
    out = head(batch["source"], batch["target"])
    return sfnet_loss(out["mapping_s2t"], out["mapping_t2s"], batch["mask_s"], batch["mask_t"])


def test_a_few_bf16_training_steps_run_in_bf16_and_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    head = tiny_head()
    seen = record_dtypes(first(head, torch.nn.Conv2d))
    trainer = Trainer(head, lambda params: torch.optim.Adam(params, lr=1e-2), sfnet_step,
                      RepeatedBatch(translated_pair_batch()), tmp_path, max_steps=25, log_every=1, progress=False,
                      precision="bf16")
    trainer.fit()
    assert set(seen) == {torch.bfloat16} and trainer.scaler is None
    assert all(parameter.dtype == torch.float32 for parameter in head.parameters())  # weights stay float32
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_fp16_training_scales_the_loss_and_resumes_exactly(tmp_path):
    def trainer(out_dir):
        torch.manual_seed(3)
        return Trainer(toy_model(), lambda params: torch.optim.Adam(params, lr=1e-2), toy_step, ToyData(), out_dir,
                       max_steps=8, seed=3, checkpoint_every=3, progress=False, precision="fp16")

    straight = trainer(tmp_path / "straight")
    final = straight.fit()
    assert isinstance(straight.scaler, torch.amp.GradScaler) and "scaler" in read_checkpoint(final)
    trainer(tmp_path / "resumed").fit(stop_after=4)
    resumed = trainer(tmp_path / "resumed")
    resumed.fit(resume=True)
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_train_precision_is_read_from_the_config_and_set_by_the_command_line(tmp_path):
    seen = []

    def build(config, device):
        model = toy_model()
        model[0].register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
        return Experiment(model=model, optimizer_factory=lambda params: torch.optim.SGD(params, lr=0.05),
                          step=toy_step, data=ToyData(), max_steps=config["train"]["steps"])

    register_method("toy-autocast", build)
    run_config({"method": "toy-autocast", "train": {"steps": 2}}, out_dir=tmp_path / "plain", progress=False)
    assert set(seen) == {torch.float32}  # the default: no autocast
    seen.clear()
    config = tmp_path / "toy.yaml"
    config.write_text("method: toy-autocast\ntrain: {steps: 2}\n")
    assert main(["train", str(config), "--precision", "bf16", "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--quiet"]) == 0
    assert set(seen) == {torch.bfloat16}
    assert read_checkpoint(tmp_path / "run" / "final.pt")["config"]["train"]["precision"] == "bf16"
    with pytest.raises(CorrmarkError, match="train.precision: unknown precision 'fp64'"):
        run_config({"method": "toy-autocast", "train": {"steps": 2, "precision": "fp64"}}, out_dir=tmp_path / "bad",
                   progress=False)


# --- command line ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["match", "a.png", "b.png", "--out", "o"],
                                     ["eval", "pf-willow"], ["propagate", "folder", "--annotated", "a.png",
                                                             "--points", "p.json", "--out", "o.json"]])
def test_matcher_commands_take_precision(command):
    assert matcher_options(build_parser().parse_args([*command, "--precision", "bf16"]))["precision"] == "bf16"
    assert matcher_options(build_parser().parse_args(command))["precision"] is None  # the library's default


def test_match_records_the_precision(pair, tmp_path):
    listed = json.loads((EXAMPLES / "pairs.json").read_text())["pairs"][0]
    points = tmp_path / "points.json"
    points.write_text(json.dumps(listed["source_points"][:3]))
    assert main(["match", str(EXAMPLES / listed["source"]), str(EXAMPLES / listed["target"]), "--points", str(points),
                 "--out", str(tmp_path / "out"), "--backbone", "efficientnet_lite0", "--image-size", "64",
                 "--precision", "bf16", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "out" / "points.json").read_text())["matcher"]["precision"] == "bf16"


# --- the prepared GPU check -----------------------------------------------------------------------------------------


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    return gpu_check


def test_gpu_check_lists_nn_and_the_present_zoo_matchers(gpu_check):
    from corrmark.zoo import list_zoo

    present = [entry.name for entry in list_zoo() if entry.kind == "matcher" and entry.available]
    assert [label for label, _ in gpu_check.matcher_builds(None)] == [gpu_check.NN_LABEL, *present]
    with pytest.raises(CorrmarkError, match="unknown or absent matcher"):
        gpu_check.matcher_builds(["nope"])


def test_gpu_check_dry_run_on_cpu_writes_the_expected_json(gpu_check, tmp_path, monkeypatch):
    # the plumbing with a small zero-shot matcher (the default list, nn best and the zoo, takes minutes on a CPU)
    monkeypatch.setattr(gpu_check, "matcher_builds", lambda wanted: [
        ("nn (small)", lambda device: small_nn(device=device))])
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--precisions", "fp32", "bf16", "--pairs", "1", "--repeats", "1",
                           "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {"command", "model", "protocol", "metrics", "seconds", "machine"} <= set(record)
    assert record["protocol"]["tolerances"] == gpu_check.TOLERANCES and record["protocol"]["device"] == "cpu"
    assert len(record["protocol"]["pairs"]) == 1 and record["metrics"]["all_within_tolerance"] is True
    reference, fp32, bf16 = record["metrics"]["rows"]
    assert reference["reference"] and reference["precision"] == "fp32" and reference["seconds_per_pair"] > 0
    for row, precision in ((fp32, "fp32"), (bf16, "bf16")):
        assert row["precision"] == precision and row["within_tolerance"] is True
        assert {"seconds_per_pair", "speedup_vs_cpu", "max_px", "median_px", "p95_px", "pck@0.1", "pck_change",
                "mapping_median_px", "mapping_share_over_2px"} <= set(row)
    assert fp32["max_px"] == 0.0 and fp32["mapping_median_px"] == 0.0  # as the reference: the same numbers


def test_gpu_check_records_a_failing_matcher_and_exits_1(gpu_check, tmp_path, monkeypatch):
    def broken(device):
        raise RuntimeError("weights on fire")

    monkeypatch.setattr(gpu_check, "matcher_builds", lambda wanted: [("broken", broken)])
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--pairs", "1", "--json", str(out)]) == 1
    row, = json.loads(out.read_text())["metrics"]["rows"]
    assert row["error"] == "RuntimeError: weights on fire" and row["within_tolerance"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_cuda_stops_with_one_line(gpu_check, capsys):
    assert gpu_check.main(["--device", "cuda"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("gpu_check: error:") and "no CUDA GPU" in error and "\n" not in error
