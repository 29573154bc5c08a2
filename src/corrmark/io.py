"""Reading images and keypoint files into the one in-memory form the library uses.

Images are ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB. Keypoints are float arrays (N, 2) of (x, y) in 0-based
pixel coordinates of the image they belong to: the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageReadError, InvalidKeypointsError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def read_image(image: ImageLike) -> np.ndarray:
    """Return ``image`` as an (H, W, 3) uint8 RGB array.

    Accepts a file path, a PIL image, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); grayscale is replicated
    and alpha dropped. Float arrays must lie in [0, 1]. Anything unreadable raises ``ImageReadError`` naming the input.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_image_file(Path(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise ImageReadError(f"cannot read an image from an object of type {type(image).__name__}")


def _read_image_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image file is empty: {path}")
    try:
        with Image.open(path) as handle:
            handle.load()  # decodes everything now, so truncation is caught here
            rgb = handle.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"cannot decode image {path}: {error}") from None
    return np.asarray(rgb).copy()


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageReadError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {tuple(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageReadError(f"image array is empty: shape {tuple(array.shape)}")
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageReadError("float image arrays must be finite and lie in [0, 1]")
        return np.ascontiguousarray(np.round(array * 255).astype(np.uint8))
    raise ImageReadError(f"unsupported image dtype {array.dtype}; use uint8 or float in [0, 1]")


def check_keypoints(points, image_shape: tuple[int, int] | None = None, *, name: str = "keypoints") -> np.ndarray:
    """Validate keypoints and return them as a float64 (N, 2) array.

    Raises ``InvalidKeypointsError`` for a wrong shape, NaN/inf values, or (when ``image_shape`` = (H, W) is given)
    points outside the image: a point is inside when -0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5 (pixel edges).
    The message names the offending indices and values; nothing is clamped.
    """
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise InvalidKeypointsError(f"{name} must have shape (N, 2), got {tuple(array.shape)}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InvalidKeypointsError(f"{name} {_describe(array, bad)} are NaN or infinite")
    if image_shape is not None:
        outside = ~points_inside(array, image_shape)
        if outside.any():
            height, width = image_shape
            raise InvalidKeypointsError(f"{name} {_describe(array, outside)} lie outside the {width}x{height} image")
    return array


def points_inside(points: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean (N,) mask of finite points that lie on the image (within its pixel edges)."""
    height, width = image_shape
    x, y = points[:, 0], points[:, 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def _describe(points: np.ndarray, mask: np.ndarray, most: int = 5) -> str:
    indices = np.flatnonzero(mask)
    shown = ", ".join(f"#{i} ({points[i, 0]:g}, {points[i, 1]:g})" for i in indices[:most])
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return f"{shown}{more}"


def read_points_file(path: str | os.PathLike) -> np.ndarray:
    """Read keypoints from JSON (a list of [x, y], or {"points": [[x, y], ...]}) or CSV/TXT (x,y per line)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidKeypointsError(f"points file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                data = data.get("points", data.get("keypoints"))
            array = np.asarray(data, dtype=np.float64)
        else:
            rows = [line.replace(",", " ").split() for line in text.splitlines() if line.strip()]
            array = np.asarray([[float(v) for v in row[:2]] for row in rows], dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise InvalidKeypointsError(f"cannot parse points file {path}: {error}") from None
    return check_keypoints(array.reshape(-1, 2) if array.size else array.reshape(0, 2), name=f"points in {path}")


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
