"""C3: Gaussian rendering, the cross-image cycle, gradients, a few training steps, exact resume, strict loading.

Everything runs on tiny networks and 32 x 32 synthetic images; the perceptual backbone is left out except in the one
test of the perceptual distance itself.
"""

import numpy as np
import pytest
import torch

from corrmark.errors import CheckpointError, UnknownNameError
from corrmark.losses.c3 import (ReconstructionDistance, cycle_loss, flow_photometric_loss, flow_supervision_loss,
                                swap_twice)
from corrmark.models.c3 import C3Config, C3Net, load_c3_landmarks
from corrmark.ops import pixel_grid, pixel_to_normalized, render_gaussians
from corrmark.train.c3 import C3Pairs, C3Step, build_experiment, cross_weight, loss_options

TINY_MODEL = {"image_size": 32, "num_landmarks": 3, "pose_channels": 4, "appearance_channels": 8,
              "generator_channels": 16, "flow_channels": 8}
BASELINE = {"cycle": 0, "flow": 0, "flow_photometric": 0, "flow_supervision": 0}


def blob_images(count=12, size=40, seed=0) -> torch.Tensor:
    """uint8 ``(N, 3, size, size)``: one bright coloured disc on a darker background per image."""
    generator = torch.Generator().manual_seed(seed)
    grid = pixel_grid(size, size)
    images = []
    for _ in range(count):
        centre = 10 + torch.rand(2, generator=generator) * (size - 20)
        disc = ((grid - centre).pow(2).sum(-1) < 36).float()
        colour = 0.5 + 0.5 * torch.rand(3, 1, 1, generator=generator)
        background = 0.2 * torch.rand(3, 1, 1, generator=generator)
        images.append(background + (colour - background) * disc)
    return (torch.stack(images) * 255).round().to(torch.uint8)


def tiny_config(**loss):
    return {"method": "c3", "seed": 0, "model": dict(TINY_MODEL),
            "data": {"batch_size": 2, "steps_per_epoch": 3, "load_size": 40},
            "loss": {"perceptual": 0, **loss}, "schedule": {"steps": 6, "cross_start": 2, "cross_ramp": 2},
            "train": {"lr": 1e-3}}


def tiny_step(**loss):
    options = loss_options({"perceptual": 0, **loss}, 3)
    return C3Step(options, {"steps": 10, "cross_start": 0, "cross_ramp": 1}, ReconstructionDistance(None))


# --- rendering ------------------------------------------------------------------------------------------------------


def test_gaussians_peak_at_the_points_with_value_one():
    size = (12, 16)
    cells = torch.tensor([[[3.0, 2.0], [10.0, 7.0]]])  # (x, y) cell centres
    maps = render_gaussians(pixel_to_normalized(cells, size), size, sigma=0.1)
    assert maps.shape == (1, 2, 12, 16)
    for index, (x, y) in enumerate(cells[0].long().tolist()):
        flat = int(maps[0, index].argmax())
        assert divmod(flat, 16) == (y, x)
        assert maps[0, index, y, x].item() == pytest.approx(1.0, abs=1e-6)
    assert float(maps.max()) <= 1.0


def test_gaussians_have_the_asked_width_and_scale_with_the_grid():
    point = torch.zeros(1, 1, 2)  # the centre: between cells on an even grid
    coarse, fine = render_gaussians(point, 16, 0.25), render_gaussians(point, 64, 0.25)
    # one sigma from the centre the value is exp(-1/2): sigma 0.25 = 2 cells on 16, 8 cells on 64 (half-width 8 / 32)
    xs = (2 * torch.arange(64) + 1) / 64 - 1
    torch.testing.assert_close(fine[0, 0, 31], torch.exp(-(xs.pow(2) + (1 / 64) ** 2) / (2 * 0.25**2)))
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(fine, 4), coarse, atol=0.03, rtol=0)
    off_centre = render_gaussians(torch.tensor([[[0.3, -0.2]]]), 16, 0.1)
    assert off_centre.max() < 1.0 and divmod(int(off_centre.argmax()), 16) == (6, 10)


def test_gaussians_are_differentiable_in_the_points():
    points = torch.tensor([[[0.1, -0.3]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: render_gaussians(p, (5, 6), 0.3), (points,))


# --- the cycle ------------------------------------------------------------------------------------------------------


def draw_dot(colours: torch.Tensor, positions: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Black images with one pixel of ``colours[i]`` at integer ``positions[i]`` = (x, y)."""
    images = torch.zeros(len(colours), 3, size, size)
    for index, ((x, y), colour) in enumerate(zip(positions.long().tolist(), colours)):
        images[index, :, y, x] = colour
    return images


def encode_dot(images: torch.Tensor) -> dict:
    """Appearance = the dot's colour, pose = its position."""
    flat = images.sum(1).flatten(1).argmax(1)
    width = images.shape[-1]
    positions = torch.stack([flat % width, flat // width], dim=1).float()
    colours = images.flatten(2).gather(2, flat[:, None, None].expand(-1, 3, 1))[..., 0]
    return {"colour": colours, "position": positions}


def generate_dot(appearance_code: dict, pose_code: dict) -> torch.Tensor:
    return draw_dot(appearance_code["colour"], pose_code["position"])


def test_cycle_loss_is_zero_when_the_generator_is_the_identity_on_matching_inputs():
    images_a = draw_dot(torch.tensor([[1.0, 0.2, 0.1], [0.3, 0.9, 0.5]]), torch.tensor([[1, 2], [6, 6]]))
    images_b = draw_dot(torch.tensor([[0.1, 0.4, 1.0], [0.7, 0.7, 0.2]]), torch.tensor([[5, 1], [0, 3]]))
    code_a, code_b = encode_dot(images_a), encode_dot(images_b)
    assert torch.equal(generate_dot(code_a, code_a), images_a)  # the generator reproduces matching inputs
    swapped = swap_twice(code_a, code_b, encode_dot, generate_dot)
    assert not torch.equal(swapped["ab"], images_a) and not torch.equal(swapped["ab"], images_b)  # a real swap
    loss = cycle_loss(images_a, images_b, swapped["a_cycled"], swapped["b_cycled"], ReconstructionDistance(None))
    assert loss["total"].item() == 0.0
    # the order matters: pose taken from the wrong generated image does not come back
    wrong = generate_dot(swapped["code_ab"], swapped["code_ab"])
    assert (wrong - images_a).abs().mean() > 0


def test_gradient_reaches_both_encoders_through_the_cycle():
    torch.manual_seed(0)
    net = C3Net(TINY_MODEL)
    batch = C3Pairs(blob_images(), 32, batch_size=2, steps_per_epoch=1).batch(0, 0, 0)
    merged = {key: torch.cat([batch["a"][key], batch["b"][key]]) for key in batch["a"]}
    step = tiny_step(flow=0, flow_photometric=0)  # the cycle alone
    _, _, code = step.synthetic_terms(net, merged)
    cycle, logged = step.pair_terms(net, merged, code)
    assert set(logged) == {"cycle", "cycle_pixel"}
    cycle.backward()
    for name in ("pose", "appearance", "generator"):
        gradients = [parameter.grad for parameter in getattr(net, name).parameters()]
        assert all(gradient is not None for gradient in gradients), name
        assert sum(float(gradient.abs().sum()) for gradient in gradients) > 0, name


def test_the_flow_losses_vanish_for_the_true_mapping():
    images = torch.rand(2, 3, 16, 16)
    identity = pixel_grid(16, 16).expand(2, 16, 16, 2)
    on_flow_grid = pixel_to_normalized(pixel_grid(4, 4), (4, 4)).expand(2, 4, 4, 2)
    assert flow_supervision_loss(on_flow_grid, identity, (16, 16)).item() == pytest.approx(0.0, abs=1e-10)
    assert flow_photometric_loss(images, images, on_flow_grid).item() == pytest.approx(0.0, abs=1e-6)
    shifted = on_flow_grid + torch.tensor([0.5, 0.0])
    assert flow_supervision_loss(shifted, identity, (16, 16)).item() == pytest.approx(0.25, abs=1e-6)


def test_flow_equivariance_trusts_a_consistent_flow_and_mutes_a_collapsing_one():
    from corrmark.losses.c3 import flow_equivariance_loss

    identity = pixel_to_normalized(pixel_grid(8, 8), (8, 8)).expand(1, 8, 8, 2)
    points_a = torch.tensor([[[-0.5, -0.5], [0.5, 0.25]]])
    points_b = points_a + torch.tensor([0.25, 0.0])  # b is a shifted by a quarter of the half-width to the right
    shift = torch.tensor([0.25, 0.0])
    b_to_a, a_to_b = identity - shift, identity + shift
    exact = flow_equivariance_loss(points_a, points_b, b_to_a, a_to_b)
    assert exact["loss"].item() == pytest.approx(0.0, abs=1e-10) and exact["trust"].item() == pytest.approx(1.0)
    collapsed = torch.zeros_like(identity)  # every cell matched to the centre: a blurry, untrained flow
    muted = flow_equivariance_loss(points_a, points_b, collapsed, collapsed)
    unweighted = flow_equivariance_loss(points_a, points_b, collapsed)
    assert muted["trust"] < 1e-3 and muted["loss"] < 1e-3 * unweighted["loss"]


def test_perceptual_distance_is_zero_for_equal_images_and_reaches_the_output():
    from corrmark.losses.c3 import PerceptualDistance

    try:
        distance = PerceptualDistance(layers=(0, 1))
    except Exception as error:  # offline weights unavailable on this machine
        pytest.skip(f"EfficientNet-Lite0 weights unavailable: {error}")
    target = torch.rand(2, 3, 32, 32)
    assert distance(target, target).item() == 0.0
    output = torch.rand(2, 3, 32, 32, requires_grad=True)
    distance(output, target).backward()
    assert output.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in distance.parameters()) and not distance.backbone.training


# --- data and schedule ----------------------------------------------------------------------------------------------


def test_pairs_are_deterministic_unpaired_and_carry_the_true_warp():
    pairs = C3Pairs(blob_images(), 32, batch_size=4, steps_per_epoch=2)
    first, again = pairs.batch(3, 1, 0), pairs.batch(3, 1, 0)
    for side in ("a", "b"):
        for key, value in first[side].items():
            assert torch.equal(value, again[side][key])
    assert not torch.equal(first["a"]["images"], first["b"]["images"])
    assert first["a"]["images"].shape == (4, 3, 32, 32) and first["a"]["mapping"].shape == (4, 32, 32, 2)
    assert int(pairs.batch(3, 1, 1)["step"]) == 3
    assert cross_weight(0, {"cross_start": 2, "cross_ramp": 4}) == 0.0
    assert cross_weight(3, {"cross_start": 2, "cross_ramp": 4}) == 0.5
    assert cross_weight(50, {"cross_start": 2, "cross_ramp": 4}) == 1.0


def test_unknown_options_are_named():
    with pytest.raises(UnknownNameError, match="cylce"):
        loss_options({"cylce": 1.0}, 10)
    with pytest.raises(UnknownNameError, match="pose_width"):
        C3Config.from_dict({"pose_width": 3})


# --- training -------------------------------------------------------------------------------------------------------


def test_a_few_steps_lower_the_loss_and_the_baseline_skips_the_pairs():
    experiment = build_experiment(tiny_config(), images=blob_images())
    net, step = experiment.model, experiment.step
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    pairs = C3Pairs(blob_images(), 32, batch_size=2, steps_per_epoch=1)
    batch = pairs.batch(0, 0, 0) | {"step": torch.tensor(100)}  # one fixed batch, cross-image terms fully on
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        out = step(net, batch)
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert "cycle" in out and "flow_equivariance" in out
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    baseline = build_experiment(tiny_config(**BASELINE), images=blob_images())
    out = baseline.step(baseline.model, batch)
    assert "cycle" not in out and "flow_supervision" not in out and out["cross_weight"] == 0.0


def _run(tmp_path, name, config, monkeypatch, **options):
    from corrmark.train import run_config

    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path / "cache"))
    return run_config(config, out_dir=tmp_path / name, progress=False, **options)


@pytest.fixture
def image_folder(tmp_path):
    from corrmark.viz import save_image

    folder = tmp_path / "images"
    for index, image in enumerate(blob_images(6)):
        save_image(image.permute(1, 2, 0).numpy(), folder / f"{index}.png")
    return folder


def test_resume_equals_the_uninterrupted_run_and_the_checkpoint_loads_strictly(tmp_path, image_folder, monkeypatch):
    config = tiny_config()
    config["data"]["sources"] = [{"dataset": "image-folder", "root": str(image_folder)}]
    straight = _run(tmp_path, "straight", config, monkeypatch)
    assert _run(tmp_path, "sliced", config, monkeypatch, stop_after=3).name == "step_00000003.pt"  # cross phase on
    sliced = _run(tmp_path, "sliced", config, monkeypatch, resume=True)
    first, second = torch.load(straight, weights_only=True), torch.load(sliced, weights_only=True)
    for key, value in first["model"].items():
        torch.testing.assert_close(second["model"][key], value, rtol=0, atol=0)

    from corrmark import load_landmark_model

    model = load_landmark_model("c3", straight)
    heatmaps, points = model.detect(torch.rand(2, 3, 50, 40))
    assert heatmaps.shape == (2, 3, 16, 16) and points.shape == (2, 3, 2)
    assert bool(((points[..., 0] > -0.5) & (points[..., 0] < 39.5) & (points[..., 1] < 49.5)).all())
    swapped = model.swap(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert swapped["ab"].shape == (2, 3, 32, 32)

    broken = dict(first["model"])
    broken.pop(next(iter(broken)))
    torch.save({**first, "model": broken}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_c3_landmarks(tmp_path / "broken.pt")


def test_runner_registration():
    from corrmark.models import LANDMARK_MODELS
    from corrmark.train import METHODS

    assert "c3" in METHODS and "c3" in LANDMARK_MODELS


#: C3Net outputs computed before the ops refactor (issue 19), when C3 had its own spatial softmax and expectation;
#: the refactored model gave bit-identical tensors on the machine that made them. Each entry: first three values, sum,
#: position-weighted sum. Another CPU (its float32 kernels sum in another order) moves the flow's sums by up to 2.5e-5
#: relative (an AMD EPYC against the recording machine), hence rel 1e-4: any change of the arithmetic moves them more.
C3_GOLDEN = {
    "psi": [0.005214174743741751, 0.004182165022939444, 0.0026919241063296795, 5.999999911058694, 9.00601949695686],
    "points": [0.07892519980669022, -0.0019712820649147034, -0.004240136593580246, 0.11237932369112968,
               0.12203479761427098],
    "flow": [0.07093644142150879, 0.18905186653137207, 0.6579177379608154, 1.556690514087677, 3.7359691762456735],
}


def test_detection_and_flow_reproduce_the_numbers_before_the_ops_refactor():
    torch.manual_seed(0)
    net = C3Net(TINY_MODEL)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        detection = net.detect(images)
        flow = net.flow(images, images.flip(-1))
    for name, tensor in (("psi", detection["psi"]), ("points", detection["points"]), ("flow", flow)):
        values = tensor.double().flatten()
        weights = torch.linspace(1.0, 2.0, values.numel(), dtype=torch.float64)
        fingerprint = [*values[:3].tolist(), float(values.sum()), float((values * weights).sum())]
        assert fingerprint == pytest.approx(C3_GOLDEN[name], rel=1e-4, abs=1e-6), name
