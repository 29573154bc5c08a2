"""corrmark.preprocess: image -> network input, size rounding, coordinates between the image and the input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corrmark.errors import CorrmarkError
from corrmark.preprocess import Preprocess, image_to_tensor, resize_points, round_to_multiple


def seeded_image() -> np.ndarray:
    """The 37 x 53 image the golden values below were computed on."""
    return np.random.default_rng(19).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def legacy_resize(image: np.ndarray, size_hw, clamp: bool = True) -> torch.Tensor:
    """The expression every model used before corrmark.preprocess (square_input, square_tensor, prepare_image, ...)."""
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255.0
    resized = F.interpolate(tensor, size=size_hw, mode="bilinear", align_corners=False, antialias=True)
    return resized.clamp(0, 1) if clamp else resized


# --- rounding -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, multiple, expected", [
    (335, 14, 336), (224, 14, 224), (230, 14, 224), (21, 14, 28), (35, 14, 28),  # 1.5 -> 2, 2.5 -> 2: ties to even
    (7, 14, 14), (0, 14, 14), (64, 1, 64), (100, 32, 96), (117.3, 8, 120),
])
def test_round_to_multiple_takes_the_nearest_multiple_and_at_least_one(value, multiple, expected):
    assert round_to_multiple(value, multiple) == expected


@pytest.mark.parametrize("value, multiple, expected", [
    (274.3, 14, 280), (182.9, 14, 196), (336.0000001, 14, 336), (337, 14, 350), (0.1, 14, 14), (64, 1, 64),
])
def test_round_to_multiple_up(value, multiple, expected):
    assert round_to_multiple(value, multiple, up=True) == expected


# --- sizes ----------------------------------------------------------------------------------------------------------


def test_working_size_of_the_square_ignores_the_image():
    preprocess = Preprocess(335, 14)
    assert preprocess.square_size == 336
    assert preprocess.working_size() == (336, 336)
    assert preprocess.working_size((10, 4000)) == (336, 336)
    assert Preprocess(64).working_size((37, 53)) == (64, 64)


def test_working_size_keeping_the_aspect_ratio():
    area = Preprocess(224, 14, keep_aspect=True)
    # the area of the 224 square at 3:2, each side rounded up: 274.3 x 182.9 -> 280 x 196
    assert area.working_size((300, 200)) == (280, 196)
    assert area.working_size((300, 200, 3)) == (280, 196)  # an image's shape works too
    assert area.working_size((1, 5000)) == (14, 896)  # the longer side is capped at 4 x 224
    long_side = Preprocess(224, 14, keep_aspect=True, aspect_rule="long-side")
    assert long_side.working_size((300, 200)) == (224, 154)  # 149.3 -> 154: the nearest multiple
    assert Preprocess(28, 14, keep_aspect=True, aspect_rule="long-side").working_size((37, 53)) == (14, 28)


def test_an_unknown_aspect_rule_is_refused_only_when_used():
    with pytest.raises(CorrmarkError, match="aspect_rule"):
        Preprocess(224, 14, keep_aspect=True, aspect_rule="width")
    assert Preprocess(224, 14, aspect_rule="width").working_size() == (224, 224)


# --- images ---------------------------------------------------------------------------------------------------------


def test_image_to_tensor_scales_uint8_to_the_unit_range():
    image = np.array([[[0, 51, 255], [255, 0, 102]]], dtype=np.uint8)  # (1, 2, 3)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 1, 2) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0, :, 0, 0], torch.tensor([0.0, 0.2, 1.0]))
    torch.testing.assert_close(tensor[0, :, 0, 1], torch.tensor([1.0, 0.0, 0.4]))


def test_to_input_of_a_2x2_image_known_values():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 1] = image[1, 0] = image[1, 1] = 255
    # downsampling by 2 averages the four pixels
    assert Preprocess(1).to_input(image).flatten().tolist() == pytest.approx([0.75] * 3)
    # upsampling by 2, bilinear with align_corners=False: the row 0 -> 1 step is 0, 0.25, 0.75, 1 (edges replicated)
    up = Preprocess(4).to_input(image)
    assert up.shape == (1, 3, 4, 4)
    assert up[0, 0, :, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])
    assert up[0, 0, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])
    assert up[0, 0, 3].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_to_input_at_the_working_size_is_the_image_itself():
    image = seeded_image()
    same_size = Preprocess(53, keep_aspect=True, aspect_rule="long-side")
    assert same_size.working_size(image.shape) == (37, 53)
    assert torch.equal(same_size.to_input(image), image_to_tensor(image))


def test_to_input_accepts_read_only_and_mirrored_arrays():
    image = seeded_image()
    frozen = image.copy()
    frozen.flags.writeable = False
    preprocess = Preprocess(28, 14)
    assert torch.equal(preprocess.to_input(frozen), preprocess.to_input(image))
    mirrored = preprocess.to_input(image[:, ::-1])
    assert torch.equal(mirrored, preprocess.to_input(np.ascontiguousarray(image[:, ::-1])))


def test_clamp_is_an_option():
    white = np.full((37, 53, 3), 255, np.uint8)
    raw = F.interpolate(image_to_tensor(white), size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(Preprocess(20, clamp=False).to_input(white), raw)
    clamped = Preprocess(20).to_input(white)
    assert torch.equal(clamped, raw.clamp(0, 1)) and float(clamped.max()) <= 1.0


def test_resize_batch_works_on_any_channel_count_and_leaves_the_working_size_alone():
    preprocess = Preprocess(8)
    masks = torch.zeros(2, 1, 16, 12)
    masks[:, :, :8] = 1
    resized = preprocess.resize_batch(masks)
    assert resized.shape == (2, 1, 8, 8)
    # antialiased: the triangle filter is twice as wide when halving, so the edge blurs (plain bilinear: 1, 0)
    assert resized[0, 0, :, 0].tolist() == pytest.approx([1, 1, 1, 0.875, 0.125, 0, 0, 0])
    already = torch.rand(3, 3, 8, 8) * 2  # not clamped: it is returned as given
    assert preprocess.resize_batch(already) is already


# --- coordinates ----------------------------------------------------------------------------------------------------


def test_points_follow_the_pixel_centre_convention():
    points = torch.tensor([[-0.5, -0.5], [52.5, 36.5], [26.0, 18.0]])  # the image's corners and its centre
    working = Preprocess(28).to_working(points, (37, 53))
    torch.testing.assert_close(working, torch.tensor([[-0.5, -0.5], [27.5, 27.5], [13.5, 13.5]]))
    torch.testing.assert_close(resize_points(torch.tensor([[0.0, 0.0]]), (2, 2), (4, 8)), torch.tensor([[1.5, 0.5]]))


@pytest.mark.parametrize("preprocess", [Preprocess(28), Preprocess(224, 14, keep_aspect=True),
                                        Preprocess(336, 14, keep_aspect=True, aspect_rule="long-side")])
def test_to_working_and_to_original_round_trip(preprocess):
    points = torch.rand(50, 2, dtype=torch.float64) * torch.tensor([300.0, 200.0]) - 0.5
    working = preprocess.to_working(points, (200, 300))
    torch.testing.assert_close(preprocess.to_original(working, (200, 300)), points)
    height, width = preprocess.working_size((200, 300))
    assert bool((working >= -0.5).all()) and bool((working[:, 0] <= width - 0.5).all())
    assert bool((working[:, 1] <= height - 0.5).all())


# --- golden values: what the functions this module replaced gave on the seeded image --------------------------------
# (jlad.square_input / resize_images, scorrsan.square_tensor / square_size / original_to_input / input_to_original,
# c3.resize_square, features.prepare_image, train.sfnet._square, eval.landmarks._image_tensor; computed before they
# were deleted: the float64 sum of the tensor and its first three values)

GOLDEN_IMAGES = [
    # (case, preprocess, shape, sum, first values)
    ("square 28 (every model's square input)", Preprocess(28, 14), (1, 3, 28, 28), 1182.1475334465504,
     [0.4646303951740265, 0.49581778049468994, 0.7553610801696777]),
    ("square 64, upsampled", Preprocess(64), (1, 3, 64, 64), 6178.71438783966,
     [0.21176470816135406, 0.4911764860153198, 0.6038909554481506]),
    ("keep_aspect, area rule", Preprocess(28, 14, keep_aspect=True), (1, 3, 28, 42), 1773.6676999405026,
     [0.4281569719314575, 0.5594975352287292, 0.38620492815971375]),
    ("keep_aspect, long-side rule", Preprocess(28, 14, keep_aspect=True, aspect_rule="long-side"), (1, 3, 14, 28),
     590.8486130833626, [0.47973328828811646, 0.5011723041534424, 0.6515660285949707]),
    ("not clamped (the c3_mtfl figure)", Preprocess(28, clamp=False), (1, 3, 28, 28), 1182.1475334465504,
     [0.4646303951740265, 0.49581778049468994, 0.7553610801696777]),
]


@pytest.mark.parametrize("case, preprocess, shape, total, first", GOLDEN_IMAGES, ids=[g[0] for g in GOLDEN_IMAGES])
def test_golden_inputs(case, preprocess, shape, total, first):
    image = seeded_image()
    tensor = preprocess.to_input(image)
    assert tuple(tensor.shape) == shape
    assert float(tensor.double().sum()) == pytest.approx(total, rel=1e-7)
    assert tensor.flatten()[:3].tolist() == pytest.approx(first, rel=1e-6)
    assert torch.equal(tensor, legacy_resize(image, shape[-2:], preprocess.clamp))  # bit for bit the code replaced


def test_golden_tensor_paths():
    image = seeded_image()
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 37, 53)
    assert float(tensor.double().sum()) == pytest.approx(2958.768685503863, rel=1e-12)
    # a batch already in [0, 1] (LandmarkModel.detect) resizes like an image
    assert torch.equal(Preprocess(28).resize_batch(tensor), Preprocess(28, 14).to_input(image))
    # a training mask (train.sfnet): one channel, same resize
    mask = np.zeros((37, 53), bool)
    mask[5:20, 10:40] = True
    resized = Preprocess(28, 14).resize_batch(torch.from_numpy(mask.astype(np.float32))[None, None])
    assert resized.shape == (1, 1, 28, 28)
    assert float(resized.double().sum()) == pytest.approx(181.14680178835988, rel=1e-7)


def test_golden_points():
    points = torch.tensor([[0.0, 0.0], [52.0, 36.0], [10.25, 20.5], [-0.5, -0.5]])
    square = Preprocess(28)
    torch.testing.assert_close(square.to_working(points, (37, 53)), torch.tensor(
        [[-0.2358490526676178, -0.12162160873413086], [27.235849380493164, 27.12162208557129],
         [5.179245471954346, 15.391892433166504], [-0.5, -0.5]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(square.to_original(points, (37, 53)), torch.tensor(
        [[0.4464285969734192, 0.1607142686843872], [98.875, 47.73214340209961],
         [19.848215103149414, 27.25], [-0.5, -0.5]]), rtol=0, atol=1e-6)
