"""SFNet model: gradients through the kernel soft argmax into the adaptation layers, a few training steps lower the
loss, the matcher interface on a tiny ResNet-101 with random weights, strict checkpoint loading."""

import numpy as np
import pytest
import torch

from corrmark.errors import CheckpointError, UnknownNameError
from corrmark.losses import sfnet_loss
from corrmark.models.sfnet import SFNetConfig, SFNetHead, SFNetMatcher, parse_source


def tiny_head(channels=(16, 24), **options):
    config = SFNetConfig(levels=[["x:1"], ["x:2"]], **options)
    return SFNetHead(config, list(channels))


def random_levels(batch=2, generator=None):
    return [torch.randn(batch, 16, 8, 8, generator=generator), torch.randn(batch, 24, 4, 4, generator=generator)]


def test_parse_source():
    assert parse_source("timm:resnet101:3") == ("timm:resnet101", 3)
    assert parse_source("dinov2_vits14:8") == ("dinov2_vits14", 8)


def test_kernel_soft_argmax_gradient_reaches_adaptation_layers():
    head = tiny_head().train()
    out = head(random_levels(), random_levels())
    assert out["mapping_s2t"].shape == (2, 8, 8, 2) and out["correlation"].shape == (2, 8, 8, 8, 8)
    out["mapping_s2t"].sum().backward()
    for adaptation in head.adaptations:
        assert adaptation.conv.weight.grad is not None
        assert adaptation.conv.weight.grad.abs().sum() > 0
        assert torch.isfinite(adaptation.conv.weight.grad).all()


def train_on_a_translated_pair(head_options: dict | None = None, steps: int = 25):
    """A few Adam steps of a tiny head on a translated, noisy pair; returns (head, losses)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    head = tiny_head(**(head_options or {})).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    source = random_levels(4, generator)
    # target = source shifted right by two cells (a translated object) with matching masks
    target = [torch.roll(level, shifts=2 if level.shape[-1] == 8 else 1, dims=-1)
              + 1.5 * torch.randn(level.shape, generator=generator) for level in source]  # noisy: not solved at start
    mask_s = torch.zeros(4, 1, 8, 8)
    mask_s[:, :, 2:6, 1:5] = 1
    mask_t = torch.roll(mask_s, 2, dims=-1)
    losses = []
    for _ in range(steps):
        out = head(source, target)
        loss = sfnet_loss(out["mapping_s2t"], out["mapping_t2s"], mask_s, mask_t)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return head, losses


def test_a_few_steps_lower_the_loss():
    _, losses = train_on_a_translated_pair()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_argmax_modes_agree_on_a_clear_match():
    head = tiny_head(test_argmax="hard").eval()
    levels = random_levels(1)
    hard = head(levels, levels)["mapping_s2t"]
    head.config.test_argmax = "kernel"
    kernel = head(levels, levels)["mapping_s2t"]
    identity = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1)
    assert torch.equal(hard[0], identity)  # every cell is its own best match
    assert (kernel[0] - identity).abs().max() < 0.5


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet101_random.pth"
    torch.save(timm.create_model("resnet101", pretrained=False).state_dict(), path)
    return path


def test_resnet101_conv4_conv5_matcher_and_strict_checkpoint(resnet_weights, tmp_path):
    from corrmark import load_matcher
    from corrmark.train import load_checkpoint, save_checkpoint

    config = {"levels": [["timm:resnet101:3"], ["timm:resnet101:4"]], "image_size": 64, "kernel_sizes": [1, 1]}
    files = {"timm:resnet101": str(resnet_weights)}
    matcher = SFNetMatcher(config, weights_files=files)
    assert matcher.features.level_channels == [1024, 2048]
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    target = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    mapping = matcher.estimate_mapping(source, target)
    assert mapping.shape == (40, 60, 2) and np.isfinite(mapping).all()
    assert mapping[..., 0].min() >= -0.5 and mapping[..., 0].max() <= 69.5
    points = matcher.transfer_keypoints(source, target, [[10.0, 12.0], [60.0, 40.0]])
    assert points.shape == (2, 2)

    checkpoint = save_checkpoint(tmp_path / "final.pt", {"model": matcher.head.state_dict(), "config": {"model": config}})
    loaded = load_matcher("sfnet", checkpoint=str(checkpoint), weights_files=files)
    assert np.allclose(loaded.estimate_mapping(source, target), mapping)
    mutual = load_matcher("sfnet", checkpoint=str(checkpoint), weights_files=files, test_mutual=True)
    mutual_mapping = mutual.estimate_mapping(source, target)
    assert mutual_mapping.shape == mapping.shape and np.isfinite(mutual_mapping).all()
    assert not np.allclose(mutual_mapping, mapping)  # the filter changes the kernel soft argmax's input
    same = load_matcher("sfnet", checkpoint=str(checkpoint), weights_files=files, mutual=True)  # CLI's --mutual
    assert same.config.test_mutual and np.allclose(same.estimate_mapping(source, target), mutual_mapping)
    with pytest.raises(UnknownNameError, match="cannot change a trained SFNet"):
        load_matcher("sfnet", checkpoint=str(checkpoint), weights_files=files, levels=[["timm:resnet101:3"]])
    state = matcher.head.state_dict()
    state.pop("adaptations.1.bn.running_mean")
    state["adaptations.9.conv.weight"] = torch.zeros(1)
    broken = save_checkpoint(tmp_path / "broken.pt", {"model": state, "config": {"model": config}})
    with pytest.raises(CheckpointError) as error:  # the check load_matcher("sfnet") runs, without another ResNet
        load_checkpoint(broken, matcher.head)
    assert "adaptations.1.bn.running_mean" in str(error.value) and "adaptations.9.conv.weight" in str(error.value)
    with pytest.raises(CheckpointError, match="needs trained weights"):
        load_matcher("sfnet")


def test_equal_source_scaling_unadapted_is_the_zero_shot_fused_descriptor(resnet_weights):
    from corrmark.backbones.descriptors import DescriptorExtractor

    files = {"timm:resnet101": str(resnet_weights)}
    config = {"levels": [["timm:resnet101:3", "timm:resnet101:4"]], "image_size": 64, "kernel_sizes": [1],
              "source_scaling": "equal", "adaptation": False}
    matcher = SFNetMatcher(config, weights_files=files)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    levels = matcher.features(images)
    fused = DescriptorExtractor([("timm:resnet101", [3, 4], 1.0)], weights_files=files)(images)
    assert torch.allclose(matcher.head.adapt(levels)[0], fused, atol=1e-5)
    channels = SFNetMatcher(dict(config, source_scaling="channels"), weights_files=files)
    assert not torch.allclose(channels.head.adapt(channels.features(images))[0], fused, atol=1e-3)
    with pytest.raises(Exception, match="source_scaling"):
        SFNetConfig(source_scaling="loud")


def test_fallback_takes_the_frozen_match_where_the_head_is_unsure(resnet_weights):
    files = {"timm:resnet101": str(resnet_weights)}
    config = {"levels": [["timm:resnet101:3"]], "image_size": 64, "kernel_sizes": [1], "argmax_normalize": False,
              "sigma": 2}
    torch.manual_seed(1)
    head = SFNetHead(SFNetConfig(**config), [1024])
    torch.nn.init.constant_(head.adaptations[0].bn.weight, 5.0)  # an adaptation far from the identity
    torch.nn.init.normal_(head.adaptations[0].bn.bias, std=5.0)
    state = head.state_dict()
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    target = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)

    def grid(**options):
        return SFNetMatcher(dict(config, **options), head_state=state, weights_files=files).grid_mapping(source, target)

    frozen = SFNetMatcher(dict(config, adaptation=False), weights_files=files).grid_mapping(source, target)
    adapted = grid()
    assert not torch.allclose(adapted, frozen, atol=1e-3)
    assert torch.allclose(grid(fallback=1.01), frozen)  # no cosine reaches 1.01: every cell falls back
    assert torch.allclose(grid(fallback=1e-9), adapted)  # every best score is positive: no cell falls back


# --- adaptation_convs: one convolution per level (the paper's, the default) or two ----------------------------------


def test_adaptation_with_two_convolutions_shapes_keys_and_identity_start():
    from corrmark.models.sfnet import Adaptation

    torch.manual_seed(0)
    one, two = Adaptation(16, 3, 0.1), Adaptation(16, 3, 0.1, convs=2)
    assert list(one.state_dict()) == ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                      "bn.num_batches_tracked"]  # every existing checkpoint's keys
    assert {key.split(".")[0] for key in two.state_dict()} == {"conv_in", "bn_in", "conv", "bn"}
    features = torch.randn(2, 16, 8, 8)
    assert two(features).shape == features.shape
    for layer in (Adaptation(16, 3, 0.0, convs=2).train(), Adaptation(16, 3, 0.0, convs=2).eval()):
        assert torch.equal(layer(features), features)  # a zero residual scale: exactly the identity
    near = Adaptation(16, 3, 1e-3, convs=2).eval()
    assert 0 < (near(features) - features).abs().max() < 1e-2
    assert torch.allclose(two.bn.weight, torch.full((16,), 0.1)) and torch.equal(two.bn_in.weight, torch.ones(16))
    with pytest.raises(Exception, match="adaptation_convs"):
        SFNetConfig(adaptation_convs=3)
    with pytest.raises(Exception, match="adaptation_convs"):
        SFNetConfig(adaptation_convs=True)


def test_a_few_steps_lower_the_loss_with_two_convolutions():
    head, losses = train_on_a_translated_pair({"adaptation_convs": 2, "kernel_sizes": [1, 1]})
    assert head.adaptations[0].conv_in.weight.grad.abs().sum() > 0
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_two_convolution_checkpoint_round_trip_and_strict_mismatch(resnet_weights, tmp_path):
    from corrmark import load_matcher
    from corrmark.train import save_checkpoint

    files = {"timm:resnet101": str(resnet_weights)}
    config = {"levels": [["timm:resnet101:3"]], "image_size": 64, "kernel_sizes": [1], "adaptation_convs": 2}
    torch.manual_seed(3)
    head = SFNetHead(SFNetConfig(**config), [1024])
    torch.nn.init.normal_(head.adaptations[0].bn.weight, std=1.0)  # far from the identity: the weights matter
    checkpoint = save_checkpoint(tmp_path / "two.pt", {"model": head.state_dict(), "config": {"model": config}})
    loaded = load_matcher("sfnet", checkpoint=str(checkpoint), weights_files=files)
    assert loaded.config.adaptation_convs == 2 and loaded.describe()["adaptation_convs"] == 2
    for key, value in head.state_dict().items():
        assert torch.equal(loaded.head.state_dict()[key], value), key
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    levels = loaded.features(loaded.preprocess.to_input(image))
    assert torch.equal(loaded.head.adapt(levels)[0], head.eval().adapt(levels)[0])
    one_conv = dict(config, adaptation_convs=1)
    for state, stored in ((head.state_dict(), one_conv), (SFNetHead(SFNetConfig(**one_conv), [1024]).state_dict(),
                                                          config)):
        mismatch = save_checkpoint(tmp_path / "mismatch.pt", {"model": state, "config": {"model": stored}})
        with pytest.raises(CheckpointError, match="conv_in"):
            load_matcher("sfnet", checkpoint=str(mismatch), weights_files=files)
    with pytest.raises(UnknownNameError, match="cannot change a trained SFNet"):
        load_matcher("sfnet", checkpoint=str(checkpoint), weights_files=files, adaptation_convs=1)
