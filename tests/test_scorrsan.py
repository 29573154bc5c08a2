"""SCorrSAN: losses on hand-made masks, the SCE, the memory-bounded upsampled flow, training variants and resume."""

import math

import numpy as np
import pytest
import torch

from corrmark.cache import FeatureBank
from corrmark.data.keypoint_pairs import RandomPairs, face_test_pairs
from corrmark.errors import CheckpointError, CorrmarkError
from corrmark.eval.interocular import InterOcularPCK
from corrmark.losses.scorrsan import (dilate_mask, keypoint_mask, mask_positions, pseudo_label_loss,
                                      select_small_losses, selection_ratio, sparse_flow_loss)
from corrmark.models.scorrsan import MutualHeads, ScorrsanConfig, ScorrsanHead, head_from_checkpoint
from corrmark.ops import soft_argmax_around_peak, sparse_self_similarity, upsample_correlation
from corrmark.train import Trainer, read_checkpoint
from corrmark.train.scorrsan import BaselineStep, MutualStep, StudentStep, teacher_student_options

# --- masks, selection, losses -------------------------------------------------------------------------------------


def test_dilation_on_hand_made_masks():
    mask = torch.zeros(1, 1, 7, 7)
    mask[0, 0, 3, 3] = 1
    mask[0, 0, 0, 6] = 1  # a corner: zero padding, the box is clipped
    out = dilate_mask(mask, 3)[0, 0]
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = 1
    expected[0:2, 5:7] = 1
    assert torch.equal(out, expected)
    assert torch.equal(dilate_mask(mask, 7)[0, 0], torch.ones(7, 7) * (dilate_mask(mask, 7)[0, 0] > 0))
    assert int(dilate_mask(mask, 7)[0, 0].sum()) == 49  # 7x7 around (3, 3) covers the whole map
    assert torch.equal(dilate_mask(mask, 1), mask)
    with pytest.raises(ValueError):
        dilate_mask(mask, 4)


def test_keypoint_mask_cells_and_invalid_points():
    points = torch.tensor([[[0.0, 0.0], [7.9, 3.2], [float("nan"), float("nan")]]])  # cells of 4 px on 16 px
    valid = torch.tensor([[True, True, False]])
    mask = keypoint_mask(points, valid, cells=4, cell_size=4.0)[0, 0]
    index = math.floor((7.9 + 0.5) / 4.0), math.floor((3.2 + 0.5) / 4.0)
    expected = torch.zeros(4, 4)
    expected[0, 0] = 1
    expected[index[1], index[0]] = 1
    assert torch.equal(mask, expected)


def test_mask_positions_are_cell_centres_with_padding():
    mask = torch.zeros(2, 1, 3, 3)
    mask[0, 0, 1, 2] = 1
    mask[0, 0, 2, 0] = 1
    mask[1, 0, 0, 0] = 1
    points, valid = mask_positions(mask, cell_size=2.0)
    assert points.shape == (2, 2, 2)
    assert valid.tolist() == [[True, True], [True, False]]
    assert torch.allclose(points[0], torch.tensor([[4.5, 2.5], [0.5, 4.5]]))  # ((j, i) + 0.5) * 2 - 0.5
    assert torch.isfinite(points).all()


def test_dynamic_selection_keeps_the_smallest_losses():
    losses = torch.tensor([[5.0, 1.0, 3.0, 2.0, 0.0], [4.0, 4.0, 1.0, 9.0, 9.0]])
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    half = select_small_losses(losses, valid, 0.5)  # ceil(0.5 * 4) = 2, ceil(0.5 * 3) = 2
    assert half.tolist() == [[False, True, False, True, False], [True, False, True, False, False]]
    assert torch.equal(select_small_losses(losses, valid, 1.0), valid)
    assert selection_ratio(0, 0.5, 1.0, 10) == 0.5
    assert selection_ratio(5, 0.5, 1.0, 10) == pytest.approx(0.75)
    assert selection_ratio(30, 0.5, 1.0, 10) == 1.0


def test_pseudo_label_loss_only_where_the_mask_allows():
    torch.manual_seed(0)
    student = torch.randn(2, 6, 2, requires_grad=True)
    teacher = torch.randn(2, 6, 2, requires_grad=True)
    valid = torch.tensor([[True, True, False, True, False, False], [False, True, True, True, True, False]])
    loss, selected = pseudo_label_loss(student, teacher, valid, ratio=0.5)
    loss.backward()
    gradient_norm = student.grad.norm(dim=-1)
    assert (gradient_norm[~selected] == 0).all()  # outside the mask and unselected: no gradient
    assert (gradient_norm[selected] > 0).all()
    assert (selected <= valid).all()
    assert teacher.grad is None  # the teacher is detached
    distances = (student - teacher).detach().norm(dim=-1)
    assert loss.item() == pytest.approx(distances[selected].mean().item(), rel=1e-5)


def test_sparse_flow_loss_ignores_invalid_and_nan():
    predicted = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    target = torch.tensor([[[3.0, 4.0], [float("nan"), 0.0]]])
    valid = torch.tensor([[True, False]])
    assert sparse_flow_loss(predicted, target, valid).item() == pytest.approx(5.0, rel=1e-5)


# --- model ----------------------------------------------------------------------------------------------------------


def tiny_config(**overrides):
    values = dict(backbone="tiny", layers=None, image_size=32, sce_kernel=3, channels=8, upsample=2, sigma=2.0,
                  beta=20.0)
    values.update(overrides)
    return ScorrsanConfig(**values)


def test_sce_shape_and_known_value():
    config = tiny_config(sce_kernel=5)
    head = ScorrsanHead(config, in_channels=4, stride=4.0)
    assert head.fuse.in_channels == 4 + 4 * (5 - 1)
    features = torch.ones(1, 4, 8, 8)  # all cells identical: cosine 1 with every neighbour inside the map
    with torch.no_grad():
        head.fuse.weight.zero_()
        head.fuse.bias.zero_()
        head.fuse.weight[0, 4:, 0, 0] = 1.0  # channel 0 = sum of the 16 self-similarities
    out = head.describe_features(features)
    assert out.shape == (1, 8, 8, 8)
    raw = torch.relu(head.fuse(torch.cat([features, sparse_self_similarity(features, 5)], 1)))
    assert raw[0, 0, 4, 4].item() == pytest.approx(16.0)  # interior: all 16 neighbours inside
    # corner (0, 0): right/down neighbours at distance 1, 2 on 3 of the 4 lines (the anti-diagonal leaves the map)
    assert raw[0, 0, 0, 0].item() == pytest.approx(6.0)


def test_queried_rows_equal_the_fully_upsampled_volume():
    torch.manual_seed(0)
    config = tiny_config(mutual=False, upsample=2, beta=20.0, sigma=1.5)
    head = ScorrsanHead(config, in_channels=4, stride=4.0)
    correlation = torch.rand(1, 4, 4, 4, 4)
    fine = upsample_correlation(correlation, 2, which="both")  # (1, 8, 8, 8, 8)
    fine_rows = fine.reshape(1, 64, 8, 8)
    expected = soft_argmax_around_peak(fine_rows, 20.0, 3.0)  # fine grid coords
    expected_px = (expected + 0.5) * 2.0 - 0.5
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    queries = torch.stack([xs, ys], -1).reshape(1, 64, 2) * 2.0 + 0.5  # fine cell centres in pixels
    assert torch.allclose(head.match_rows(correlation, queries), expected_px, atol=1e-4)


#: ScorrsanHead matches (argmax "window") computed before the ops refactor (issue 19), when SCorrSAN had its own
#: window soft argmax; the refactored head gave bit-identical tensors on the machine that made them. Each entry: first
#: three values, sum, position-weighted sum of the (1, 6, 2) matched pixels.
SCORRSAN_GOLDEN = {
    False: [1.2049462795257568, 30.244888305664062, 30.43133544921875, 211.72326183319092, 318.08021512898534],
    True: [3.4350147247314453, 28.61528968811035, 28.143447875976562, 210.34367895126343, 316.08818453008473],
}


@pytest.mark.parametrize("normalize", [False, True])
def test_window_matches_reproduce_the_numbers_before_the_ops_refactor(normalize):
    torch.manual_seed(0)
    head = ScorrsanHead(tiny_config(sigma=1.5, argmax="window", normalize_scores=normalize), in_channels=4,
                        stride=4.0)
    generator = torch.Generator().manual_seed(123)
    query = torch.randn(1, 4, 8, 8, generator=generator)
    reference = torch.randn(1, 4, 8, 8, generator=generator)
    queries_px = torch.rand(1, 6, 2, generator=generator) * 31
    with torch.no_grad():
        values = head(query, reference, queries_px).double().flatten()
    weights = torch.linspace(1.0, 2.0, values.numel(), dtype=torch.float64)
    fingerprint = [*values[:3].tolist(), float(values.sum()), float((values * weights).sum())]
    assert fingerprint == pytest.approx(SCORRSAN_GOLDEN[normalize], rel=1e-5, abs=1e-5)


def test_checkpoint_loading_is_strict_and_mt_picks_the_selected_head():
    config = tiny_config()
    pair = MutualHeads(config, 4, 4.0)
    payload = {"model": pair.state_dict(), "config": {"method": "scorrsan", "model": config.to_dict(),
                                                      "model_info": {"in_channels": 4, "stride": 4.0}},
               "metrics": {"selected_head": 1}}
    head, _, _ = head_from_checkpoint(payload)
    assert torch.equal(head.fuse.weight, pair.heads[1].fuse.weight)
    head0, _, _ = head_from_checkpoint(payload, head=0)
    assert torch.equal(head0.fuse.weight, pair.heads[0].fuse.weight)
    broken = dict(payload, model={k: v for k, v in pair.state_dict().items() if "bias" not in k})
    with pytest.raises(CheckpointError):
        head_from_checkpoint(broken)
    wrong = dict(payload, config=dict(payload["config"], model_info={"in_channels": 5, "stride": 4.0}))
    with pytest.raises(CheckpointError):
        head_from_checkpoint(wrong)


NOISE = 0.5

# --- training ------------------------------------------------------------------------------------------------------


def synthetic_bank(images=12, channels=16, grid=6, stride=4.0, keypoints=4, seed=0):
    """Random images whose 4 'signal' channels are shared up to a per-image shift; 12 noisy channels mislead."""
    rng = np.random.default_rng(seed)
    size = int(grid * stride)
    base = rng.normal(size=(4, grid + 4, grid + 4)).astype(np.float32)
    base_points = rng.uniform(9, 22, size=(keypoints, 2)).astype(np.float32)  # visible in every shift
    features, points = [], []
    for _ in range(images):
        dy, dx = rng.integers(0, 3, 2)
        signal = base[:, dy:dy + grid, dx:dx + grid]
        noise = NOISE * rng.normal(size=(channels - 4, grid, grid)).astype(np.float32)
        features.append(np.concatenate([signal, noise]))
        shifted = base_points - np.array([dx, dy], dtype=np.float32) * stride
        points.append(shifted)
    return FeatureBank(features=torch.tensor(np.stack(features)).half(), points=torch.tensor(np.stack(points)),
                       shapes=torch.full((images, 2), size, dtype=torch.int64),
                       groups=torch.zeros(images, dtype=torch.int64), views=1, paths=[f"img{i}" for i in range(images)],
                       size=size, stride=stride, meta={"synthetic": True})


def make_trainer(variant, out_dir, steps=12, teacher=None):
    torch.manual_seed(0)
    bank = synthetic_bank()
    config = tiny_config()
    ts = teacher_student_options({"variant": variant, "teacher": "x" if variant == "st" else None, "dilation": 3,
                                  "selection": {"start": 0.5, "end": 1.0, "ramp_epochs": 2}, "weight": 1.0})
    if variant == "mt":
        model, step = MutualHeads(config, 16, 4.0), MutualStep(bank.size, bank.stride, config, ts)
    elif variant == "st":
        model, step = ScorrsanHead(config, 16, 4.0), StudentStep(bank.size, bank.stride, config, ts, teacher)
    else:
        model, step = ScorrsanHead(config, 16, 4.0), BaselineStep(bank.size, bank.stride, config)
    return Trainer(model, lambda p: torch.optim.Adam(p, lr=0.05), step, RandomPairs(bank, 4, 4), out_dir,
                   max_steps=steps, log_every=1, checkpoint_every=4, progress=False, seed=0,
                   config={"method": "scorrsan", "model": config.to_dict(),
                           "model_info": {"in_channels": 16, "stride": 4.0}})


def losses_of(out_dir, key="loss"):
    import json

    return [json.loads(line)[key] for line in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    final = make_trainer("none", out, steps=16).fit()
    return out, final


def test_baseline_training_reduces_the_loss(baseline):
    out, final = baseline
    losses = losses_of(out)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    head, _, _ = head_from_checkpoint(read_checkpoint(final))
    assert isinstance(head, ScorrsanHead)


def test_single_teacher_training_reduces_the_loss(baseline, tmp_path):
    _, final = baseline
    teacher, _, _ = head_from_checkpoint(read_checkpoint(final))
    make_trainer("st", tmp_path, steps=16, teacher=teacher).fit()
    sparse = losses_of(tmp_path, "sparse")
    assert np.mean(sparse[-4:]) < 0.8 * np.mean(sparse[:4])
    assert all(0 < s <= 1 for s in losses_of(tmp_path, "selected"))
    assert losses_of(tmp_path, "ratio")[0] == pytest.approx(0.5)


def test_mutual_teachers_training_reduces_the_loss(tmp_path):
    make_trainer("mt", tmp_path, steps=16).fit()
    for head in "ab":
        sparse = losses_of(tmp_path, f"sparse_{head}")
        assert np.mean(sparse[-4:]) < 0.8 * np.mean(sparse[:4])


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    straight = make_trainer("mt", tmp_path / "a", steps=10).fit()
    make_trainer("mt", tmp_path / "b", steps=10).fit(stop_after=5)
    resumed = make_trainer("mt", tmp_path / "b", steps=10).fit(resume=True)
    first, second = read_checkpoint(straight)["model"], read_checkpoint(resumed)["model"]
    assert all(torch.equal(first[key], second[key]) for key in first)


# --- protocol helpers ----------------------------------------------------------------------------------------------


def test_face_test_pairs_are_seeded_and_use_each_face_twice():
    indices, pairs = face_test_pairs(10, 100, seed=3)
    again, pairs_again = face_test_pairs(10, 100, seed=3)
    assert indices == again and pairs == pairs_again and len(set(indices)) == 10
    assert sorted(s for s, _ in pairs) == list(range(10)) and sorted(t for _, t in pairs) == list(range(10))
    assert all(s != t for s, t in pairs)


def test_interocular_pck_known_value():
    gt = np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 20.0], [12.0, 30.0], [28.0, 30.0]])  # eyes 20 px apart
    pred = gt + np.array([[1.0, 0], [0, 0], [1.5, 0], [0, 0], [5.0, 0]])
    accumulator = InterOcularPCK("t2s", alphas=(0.05, 0.1))
    accumulator.add(pred, gt, np.ones(5, bool))
    result = accumulator.result()
    assert result["pck"] == {"0.05": pytest.approx(3 / 5), "0.1": pytest.approx(4 / 5)}  # L*alpha = 1 and 2 px
    assert result["protocol"]["threshold"] == "inter-ocular"


# --- the Matcher and the cached-feature evaluation path agree --------------------------------------------------------


def test_matcher_equals_the_feature_bank_path(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from PIL import Image

    from corrmark import load_matcher
    from corrmark.data.keypoint_pairs import KeypointImage, build_keypoint_bank
    from corrmark.train import save_checkpoint
    from corrmark.train.scorrsan import predict_pairs

    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    weights_files = {"timm:resnet18": str(weights)}
    rng = np.random.default_rng(0)
    items = []
    for index, (height, width) in enumerate([(40, 56), (48, 44)]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        points = rng.uniform(2, min(height, width) - 3, size=(3, 2))
        items.append(KeypointImage(str(path), points, (height, width)))
    config = ScorrsanConfig(backbone="timm:resnet18", layers=[2], image_size=64, sce_kernel=3, channels=8)
    bank = build_keypoint_bank(items, config.backbone, config.layers, config.image_size, weights_files=weights_files,
                               progress=False)
    (entry,) = (tmp_path / "cache" / "scorrsan_features").glob("*.pt")
    # the stored layout of every SCorrSAN bank so far: banks already on disk must stay readable
    assert list(torch.load(entry, weights_only=True)) == ["features", "points", "shapes", "groups", "views", "paths",
                                                          "size", "stride", "meta"]
    head = ScorrsanHead(config, bank.channels, bank.stride)
    checkpoint = tmp_path / "final.pt"
    save_checkpoint(checkpoint, {"model": head.state_dict(), "config": {
        "method": "scorrsan", "model": config.to_dict(), "model_info": {"in_channels": bank.channels,
                                                                        "stride": bank.stride}}})
    matcher = load_matcher("scorrsan", checkpoint=str(checkpoint), weights_files=weights_files)
    source, target = (np.asarray(Image.open(item.path).convert("RGB")) for item in items)
    via_matcher = matcher.transfer_keypoints(target, source, items[1].points)  # t2s: target points -> source
    via_bank = predict_pairs(head, bank, [(0, 1)])[0]
    assert np.allclose(via_matcher, via_bank, atol=1e-3)
    mapping = matcher.estimate_mapping(source, target)
    assert mapping.shape == (48, 44, 2) and np.isfinite(mapping).all()


def test_mirrored_pairs_mirror_both_images_together():
    from corrmark.data.keypoint_pairs import FixedPairs

    images, size = 4, 8
    features = torch.arange(images * 2, dtype=torch.float16).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    points = torch.zeros(images * 2, 1, 2)
    points[1::2, 0, 0] = size - 1  # the mirrored view's x
    bank = FeatureBank(features=features, points=points, shapes=torch.full((images, 2), size),
                       groups=torch.zeros(images, dtype=torch.int64), views=2, paths=[str(i) for i in range(images)],
                       size=size, stride=4.0, meta={})
    pairs = [(0, 1), (1, 2), (2, 3), (3, 0)] * 8
    shown = [(int(s), int(t)) for batch in FixedPairs(bank, pairs, 8, mirror_pairs=True).batches(0, 0)
             for s, t in zip(batch["source"][:, 0, 0, 0], batch["target"][:, 0, 0, 0])]
    assert all(s % 2 == t % 2 for s, t in shown)  # a pair is plain or mirrored as a whole
    assert {s % 2 for s, _ in shown} == {0, 1}  # both kinds occur
    assert sorted((s // 2, t // 2) for s, t in shown) == sorted(pairs)  # each listed pair once per epoch
    plain = [batch["source"][:, 0, 0, 0] for batch in FixedPairs(bank, pairs, 8).batches(0, 0)]
    assert all(int(v) % 2 == 0 for chunk in plain for v in chunk)
    with pytest.raises(CorrmarkError, match="views: 2"):
        FixedPairs(synthetic_bank(), pairs, mirror_pairs=True)
