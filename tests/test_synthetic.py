"""Synthetic warps keep image and mask aligned, and their mapping is the true correspondence."""

import torch

from corrmark.data.synthetic import SyntheticWarp, WarpConfig, random_mapping, tps_mapping, warp_image_and_mask
from corrmark.ops import inside_map


def ramp_image(h=40, w=48):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs / w, ys / h, 0.5 * torch.ones_like(xs)])[None]  # linear in x and y


def test_warp_reads_image_and_mask_at_the_mapping():
    image = ramp_image()
    mask = torch.zeros(1, 1, 40, 48)
    mask[:, :, 10:30, 12:36] = 1
    config = WarpConfig(tps_probability=1.0, flip_probability=1.0, jitter={})
    view = SyntheticWarp(config).view(image.repeat(3, 1, 1, 1), mask.repeat(3, 1, 1, 1), torch.Generator().manual_seed(1))
    mapping = view["mapping"]
    inner = inside_map(mapping, (39, 47)) & (mapping > 0.5).all(-1)  # away from the border padding
    assert inner.float().mean() > 0.5
    # bilinear sampling of a linear image is exact: the view's colour encodes where it came from
    assert torch.allclose(view["image"][:, 0][inner] * 48, mapping[..., 0][inner], atol=1e-3)
    assert torch.allclose(view["image"][:, 1][inner] * 40, mapping[..., 1][inner], atol=1e-3)
    # the mask moved with the image: inside the rectangle (with a 1-pixel margin) it is 1, far outside 0
    x, y = mapping[..., 0], mapping[..., 1]
    fully_in = (x > 13) & (x < 34) & (y > 11) & (y < 28)
    fully_out = ~((x > 10) & (x < 37) & (y > 8) & (y < 31))
    assert torch.all(view["mask"][:, 0][fully_in] > 0.99)
    assert torch.all(view["mask"][:, 0][fully_out & inside_map(mapping, (40, 48))] < 0.01)


def test_flip_mirrors_and_tps_hits_control_points():
    g = torch.Generator().manual_seed(0)
    config = WarpConfig(rotation=0, scale=(1, 1), aspect=0, shear=0, translation=0, flip_probability=1.0, jitter={})
    mapping = random_mapping(g, 1, (10, 12), config)
    assert torch.allclose(mapping[0, 3, 0], torch.tensor([11.0, 3.0]))  # column 0 of the view reads column 11
    deformation = tps_mapping(torch.Generator().manual_seed(2), 2, (30, 30), 3, 0.0)
    ys, xs = torch.meshgrid(torch.arange(30.0), torch.arange(30.0), indexing="ij")
    assert torch.allclose(deformation[0], torch.stack([xs, ys], -1), atol=1e-2)  # zero displacement = identity


def test_views_are_reproducible_and_jitter_stays_in_range():
    images = torch.rand(2, 3, 32, 32)
    warp = SyntheticWarp({"tps_probability": 0.5})
    first = warp.view(images, None, torch.Generator().manual_seed(5))
    second = warp.view(images, None, torch.Generator().manual_seed(5))
    assert torch.equal(first["image"], second["image"]) and first["mask"] is None
    assert first["image"].min() >= 0 and first["image"].max() <= 1
    warped, _, valid = warp_image_and_mask(images, None, first["mapping"])
    assert warped.shape == images.shape and valid.dtype == torch.bool
