"""Every matcher's dense mapping (float32, upsampled in chunks from its coarse mapping) and keypoint transfer: the
numbers of the code they replaced (golden values computed with it on the seeded inputs below), the sparse path
against the dense one, what is computed per call, and peak memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from corrmark import load_matcher
from corrmark.cache import DescriptorCache
from corrmark.models.base import CoarseMapping, Matcher, read_mapping_at

_RNG = np.random.default_rng(20)
SOURCE = _RNG.integers(0, 256, (45, 61, 3), dtype=np.uint8)
TARGET = _RNG.integers(0, 256, (38, 52, 3), dtype=np.uint8)
POINTS = np.array([[-0.5, -0.5], [60.5, 44.5], [0.0, 0.0], [60.0, 44.0], [13.3, 7.9], [30.5, 22.25], [47.77, 40.1],
                   [5.0, 31.0]])  # the source's corners (pixel edges and centres) and points inside
TINY_JLAD = {"feature_channels": 8, "radius": 2, "num_landmarks": 3, "detector_channels": 8, "upsample": 2,
             "alignment_channels": 4, "uncertainty_channels": 4}

# name -> (mapping sum, mapping[0, 0], mapping[-1, -1], sum of the mapping from the source to its mirror image, the
# keypoints of the base class's path: read_mapping_at(estimate_mapping(target, source), POINTS) in the replaced code)
GOLDEN = {
    "sfnet": (104531.4999423027, [9.527933120727539, 2.3142282962799072], [54.74268341064453, 41.40376663208008],
              138964.80590105057,
              [[48.221329, 1.888246], [47.212151, 35.100372], [48.221329, 1.888246], [47.212151, 35.100372],
               [31.835955, 9.039668], [32.431231, 21.620901], [39.094639, 31.284737], [11.681321, 26.019793]]),
    "jlad": (103208.93450832367, [10.241935729980469, 8.951831817626953], [52.65009689331055, 39.6622428894043],
             143233.44159770012,
             [[7.813118, 3.123815], [44.929115, 30.695501], [7.813118, 3.123815], [44.929115, 30.695501],
              [13.725161, 8.749566], [25.489425, 18.510701], [39.187845, 30.697061], [9.129891, 24.998461]]),
    "scorrsan": (101522.66220724583, [2.022819995880127, 1.3691456317901611], [58.53540802001953, 42.89756393432617],
                 134870.9148811102,
                 [[1.184659, 0.690866], [49.635902, 36.299683], [1.184659, 0.690866], [49.635902, 36.299683],
                  [17.587552, 13.347112], [32.547938, 16.286491], [19.672072, 14.552071], [15.339272, 9.454789]]),
    "nn": (100863.17414081097, [1.406368613243103, 5.130101680755615], [58.58720779418945, 42.62247085571289],
           138829.03594589233,
           [[14.124762, 1.083365], [49.871506, 35.911289], [14.124762, 1.083365], [49.871506, 35.911289],
            [16.965267, 4.632066], [26.00427, 15.744589], [43.410618, 29.614485], [7.883852, 31.903965]]),
    # flip="auto" matches the mirror image mirrored: the same numbers as "nn" but for that mapping
    "nn_flip": (100863.17414081097, [1.406368613243103, 5.130101680755615], [58.58720779418945, 42.62247085571289],
                142740.0061571598, None),
}


def build_sfnet():
    from corrmark.models.sfnet import SFNetMatcher

    torch.manual_seed(0)  # the head's random initialisation the golden values were computed with
    return SFNetMatcher({"levels": [["efficientnet_lite0:2"], ["efficientnet_lite0:3"]], "image_size": 64})


def build_jlad(folder):
    from corrmark.models.jlad import FrozenFeatures, JLADConfig, JLADNet
    from corrmark.train import save_checkpoint

    config = JLADConfig(backbone="efficientnet_lite0", layers=[2], image_size=64, **TINY_JLAD)
    frozen = FrozenFeatures(config)
    torch.manual_seed(0)
    net = JLADNet(config, frozen.channels)
    path = folder / "jlad.pt"
    save_checkpoint(path, {"model": net.state_dict(), "config": {"method": "jlad", "model": config.to_dict()}})
    return load_matcher("jlad", checkpoint=str(path))


def build_scorrsan(folder):
    from corrmark.backbones import build_backbone
    from corrmark.models.scorrsan import ScorrsanConfig, ScorrsanHead
    from corrmark.train import save_checkpoint

    config = ScorrsanConfig(backbone="efficientnet_lite0", layers=[2], image_size=64, sce_kernel=3, channels=8)
    spec = next(iter(build_backbone("efficientnet_lite0", layers=[2]).feature_specs.values()))
    torch.manual_seed(0)
    head = ScorrsanHead(config, spec.channels, spec.stride)
    path = folder / "scorrsan.pt"
    info = {"in_channels": spec.channels, "stride": spec.stride}
    save_checkpoint(path, {"model": head.state_dict(),
                           "config": {"method": "scorrsan", "model": config.to_dict(), "model_info": info}})
    return load_matcher("scorrsan", checkpoint=str(path))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The golden values were computed with one torch thread: with two, convolutions sum in another order, and the
    last-bit differences can move a hard argmax by a cell (SCorrSAN's window soft argmax)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def matchers(tmp_path_factory, nn_matcher, one_thread):
    folder = tmp_path_factory.mktemp("matchers")
    try:
        built = {"sfnet": build_sfnet(), "jlad": build_jlad(folder), "scorrsan": build_scorrsan(folder)}
    except Exception as error:  # offline weights unavailable on this machine
        pytest.skip(f"EfficientNet-Lite0 weights unavailable: {error}")
    built["nn"] = nn_matcher
    built["nn_flip"] = load_matcher("nn", preset="dinov2-block8-soft", flip="auto")
    return built


@pytest.mark.parametrize("name", list(GOLDEN))
def test_dense_mappings_are_float32_with_the_replaced_code_s_numbers(matchers, name):
    total, first, last, mirrored_total, _ = GOLDEN[name]
    mapping = matchers[name].estimate_mapping(SOURCE, TARGET)
    assert mapping.dtype == np.float32 and mapping.shape == (38, 52, 2)
    assert float(mapping.astype(np.float64).sum()) == pytest.approx(total, rel=1e-7)
    np.testing.assert_allclose(mapping[0, 0], first, rtol=0, atol=1e-5)
    np.testing.assert_allclose(mapping[-1, -1], last, rtol=0, atol=1e-5)
    to_mirror = matchers[name].estimate_mapping(SOURCE, np.ascontiguousarray(SOURCE[:, ::-1]))
    assert to_mirror.dtype == np.float32 and to_mirror.shape == (45, 61, 2)
    assert float(to_mirror.astype(np.float64).sum()) == pytest.approx(mirrored_total, rel=1e-7)


@pytest.mark.parametrize("name", ["sfnet", "jlad", "scorrsan", "nn"])
def test_base_class_keypoints_are_the_replaced_dense_path_s_numbers(matchers, name):
    moved = Matcher.transfer_keypoints(matchers[name], SOURCE, TARGET, POINTS)  # sfnet, jlad: their own path too
    assert moved.dtype == np.float64
    np.testing.assert_allclose(moved, GOLDEN[name][4], rtol=0, atol=1e-4)


SPARSE_TOLERANCE_PX = 1e-3  # the sparse path computes the dense path's four pixels in the same float32 operations,
# so on one machine the two agree bit for bit (tests/test_ops_warp.py); the tolerance only allows for a descriptor
# computed twice differently (a nondeterministic GPU kernel)


@pytest.mark.parametrize("name", ["sfnet", "jlad", "scorrsan", "nn"])
def test_sparse_keypoints_equal_the_dense_mapping_read_at_the_points(matchers, name):
    matcher = matchers[name]
    rng = np.random.default_rng(7)
    for source_hw, target_hw in (((57, 83), (64, 49)), ((40, 40), (90, 31))):
        source = rng.integers(0, 256, (*source_hw, 3), dtype=np.uint8)
        target = rng.integers(0, 256, (*target_hw, 3), dtype=np.uint8)
        height, width = source_hw
        points = np.stack([rng.uniform(-0.5, width - 0.5, 60), rng.uniform(-0.5, height - 0.5, 60)], axis=1)
        points[:4] = [[-0.5, -0.5], [width - 0.5, height - 0.5], [width - 0.5, -0.5], [0.0, height - 1.0]]
        sparse = Matcher.transfer_keypoints(matcher, source, target, points)
        dense = read_mapping_at(matcher.estimate_mapping(target, source), points)
        assert np.abs(sparse - dense).max() <= SPARSE_TOLERANCE_PX


@pytest.mark.parametrize("name", ["sfnet", "jlad"])
def test_sfnet_and_jlad_keypoints_upsample_nothing(matchers, name, monkeypatch):
    import corrmark.models.base as base

    def refuse(*args, **kwargs):
        raise AssertionError("a dense mapping was built for a keypoint transfer")

    monkeypatch.setattr(base, "upsample_mapping", refuse)
    monkeypatch.setattr(type(matchers[name]), "estimate_mapping", refuse)
    assert matchers[name].transfer_keypoints(SOURCE, TARGET, POINTS).shape == (8, 2)


def test_sfnet_reads_and_hashes_each_image_once_per_call(matchers, monkeypatch):
    import corrmark.models.sfnet as sfnet_module

    matcher = matchers["sfnet"]
    reads, hashes = [], []
    real_read, real_key = sfnet_module.read_image, DescriptorCache.key_of
    monkeypatch.setattr(sfnet_module, "read_image", lambda image: reads.append(1) or real_read(image))
    monkeypatch.setattr(DescriptorCache, "key_of", staticmethod(lambda image: hashes.append(1) or real_key(image)))
    matcher.estimate_mapping(SOURCE, TARGET)
    assert (len(reads), len(hashes)) == (2, 2)
    hashes.clear()
    matcher.transfer_keypoints(SOURCE, TARGET, POINTS)
    assert len(hashes) == 2


class GridStub(Matcher):
    """A matcher whose working grid is a fixed 24 x 24 affine flow in source-grid cells."""

    name = "grid-stub"

    def coarse_mapping(self, source, target):
        grid = torch.stack(torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="xy"), -1) * 0.9 + 1
        return CoarseMapping(grid, (24, 24), tuple(source.shape[:2]))

    def estimate_mapping(self, source, target):
        return self.coarse_mapping(source, target).dense(np.shape(target)[:2])


def test_a_large_dense_mapping_costs_its_output_plus_a_bound_independent_of_the_image():
    image = np.zeros((3000, 4000, 3), dtype=np.uint8)  # allocated before tracing: the caller's
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        mapping = GridStub().estimate_mapping(image, image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mapping.dtype == np.float32 and mapping.shape == (3000, 4000, 2)
    assert peak - mapping.nbytes < 16 * 2**20  # the replaced code: 3 x the output (float32, then a float64 copy)
    points = np.array([[0.0, 0.0], [3999.0, 2999.0], [1234.5, 777.25]])
    np.testing.assert_array_equal(GridStub().transfer_keypoints(image, image, points), read_mapping_at(
        GridStub().estimate_mapping(image, image), points))
