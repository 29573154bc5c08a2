"""SFNet end to end through run_config: feature bank with saliency masks, a few steps, resume, load_matcher."""

import numpy as np
import pytest
import torch
from PIL import Image

from corrmark.train import read_checkpoint, run_config


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    timm = pytest.importorskip("timm")
    root = tmp_path_factory.mktemp("sfnet")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for index in range(4):
        array = np.full((48, 56, 3), 90, dtype=np.uint8)
        y, x = rng.integers(4, 16, 2)
        array[y:y + 24, x:x + 28] = rng.integers(120, 255, 3)
        array = np.clip(array + rng.integers(0, 30, array.shape), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(images / f"{index}.png")
    torch.manual_seed(0)
    weights = root / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    return root, weights


def config_for(root, weights, steps):
    return {
        "method": "sfnet", "name": "tiny", "seed": 0,
        "model": {"levels": [["timm:resnet18:2"], ["timm:resnet18:3"]], "image_size": 64, "kernel_sizes": [3, 1]},
        "weights_files": {"timm:resnet18": str(weights)},
        "data": {"sources": [{"dataset": "image-folder", "root": str(root / "images"), "masks": "saliency",
                              "saliency_threshold": 0.5, "group": "box"}],
                 "views": 2, "batch_size": 2, "steps_per_epoch": 3},
        "train": {"steps": steps, "lr": 1e-2, "checkpoint_every": 2, "log_every": 1},
    }


def test_train_resume_and_load(tiny_setup, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from corrmark import load_matcher

    root, weights = tiny_setup
    monkeypatch.setenv("CORRMARK_CACHE", str(tmp_path / "cache"))
    straight = run_config(config_for(root, weights, 5), out_dir=tmp_path / "a", progress=False)
    run_config(config_for(root, weights, 5), out_dir=tmp_path / "b", progress=False, stop_after=3)  # interrupted
    resumed = run_config(config_for(root, weights, 5), out_dir=tmp_path / "b", resume=True, progress=False)
    first, second = read_checkpoint(straight), read_checkpoint(resumed)
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    assert first["config"]["model"]["image_size"] == 64 and first["step"] == 5
    (entry,) = (tmp_path / "cache" / "sfnet_features").glob("*.pt")  # the frozen features were cached once
    # the stored layout of every SFNet bank so far: banks already on disk must stay readable
    assert list(torch.load(entry, weights_only=True)) == ["levels", "masks", "groups", "views", "meta"]
    matcher = load_matcher("sfnet", checkpoint=str(straight), weights_files={"timm:resnet18": str(weights)})
    image = np.asarray(Image.open(root / "images" / "0.png"))
    assert matcher.estimate_mapping(image, image).shape == (48, 56, 2)


def test_bank_rows_are_image_major_across_chunks(tiny_setup, tmp_path):
    """Row ``image * views + view`` holds that image's view, also past the first chunk of 8 images."""
    pytest.importorskip("onnxruntime")
    from corrmark.data.synthetic import SyntheticWarp, WarpConfig
    from corrmark.io import read_image
    from corrmark.models.sfnet import SFNetConfig, SFNetFeatures
    from corrmark.preprocess import Preprocess
    from corrmark.train.sfnet import build_feature_bank

    root, weights = tiny_setup
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(10):  # two chunks: 8 + 2
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{index:02d}.png")
    config = config_for(root, weights, 1)
    config["data"]["sources"][0]["root"] = str(folder)
    model = SFNetConfig.from_dict(config["model"])
    weights_files = config["weights_files"]
    bank = build_feature_bank(model, config["data"], weights_files=weights_files, cache=False, progress=False)
    features = SFNetFeatures(model.levels, weights_files=weights_files).eval()
    preprocess = Preprocess(model.image_size, features.size_multiple)
    paths = sorted(folder.glob("*.png"))
    images = torch.cat([preprocess.to_input(read_image(path)) for path in paths])
    with torch.no_grad():
        plain = features(images)
        generator = torch.Generator().manual_seed(0 * 1_000_003 + 8 * 97 + 1)  # the second chunk's warp, view 1
        warped = features(SyntheticWarp(WarpConfig.from_dict({})).view(images[8:], None, generator)["image"])
    assert bank.levels[0].shape[0] == 20
    for image in range(10):
        assert torch.allclose(bank.levels[0][image * 2].float(), plain[0][image].half().float())
    assert torch.allclose(bank.levels[1][9 * 2 + 1].float(), warped[1][1].half().float())
