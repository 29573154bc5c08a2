"""Reading images and keypoint files into the one in-memory form the library uses.

Images are ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB, **as an image viewer shows them**: a file's EXIF
orientation is applied (a portrait phone photo comes out upright) and 16-bit, 32-bit and float files are scaled to
8 bits. Keypoints are float arrays (N, 2) of (x, y) in 0-based pixel coordinates of that upright image: the centre of
the top-left pixel is (0, 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, InvalidKeypointsError, OutputError

if TYPE_CHECKING:  # torch is imported only where tensors are used
    import torch

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, "torch.Tensor"]

# File name endings taken as images when a folder is listed (image-folder datasets, propagate).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by 90 degrees
ROTATED_ORIENTATIONS = (5, 6, 7, 8)
# full-scale value of Pillow's high-bit-depth modes (mode "I" holds 16-bit PNGs as well as 32-bit TIFFs: see
# _high_depth_to_rgb); "F" (float) files are taken as [0, 1] and scaled by their maximum when it is larger
_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def read_image(image: ImageLike) -> np.ndarray:
    """Return ``image`` as an (H, W, 3) uint8 RGB array, as a viewer shows it (module docstring).

    Accepts a file path, a PIL image, an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), or a torch tensor (3, H, W)
    / (1, H, W) / (H, W) (uint8, or float in [0, 1], as torchvision gives them); grayscale is replicated and alpha
    dropped. Float arrays must lie in [0, 1]. Anything unreadable raises ``ImageReadError`` naming the input.
    """
    if isinstance(image, (str, os.PathLike)):
        return _read_image_file(Path(image))
    if isinstance(image, Image.Image):
        try:  # a lazily opened image decodes here: a truncated or closed file fails now
            return _pil_to_rgb(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageReadError(f"cannot decode the PIL image: {error}") from None
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if type(image).__module__.startswith("torch") and hasattr(image, "detach"):
        return _tensor_to_rgb(image)
    raise ImageReadError(f"cannot read an image from an object of type {type(image).__name__}")


def _tensor_to_rgb(tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, 2)  # (C, H, W) -> (H, W, C)
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4):
        raise ImageReadError(f"ambiguous image tensor of shape {tuple(array.shape)}: give (C, H, W) with H, W > 4")
    return _array_to_rgb(array)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Upright (EXIF orientation applied), 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _FULL_SCALE or image.mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    return np.asarray(image.convert("RGB")).copy()


def _high_depth_to_rgb(image: Image.Image) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    peak = float(finite.max()) if finite.size else 0.0
    if image.mode == "F":
        scale = max(1.0, peak)
    elif image.mode == "I":
        scale = 65535.0 if peak <= 65535 else 4294967295.0 if peak > 2147483647 else 2147483647.0
    else:
        scale = _FULL_SCALE[image.mode]
    grey = np.clip(np.nan_to_num(values / scale, nan=0.0), 0.0, 1.0)
    return _array_to_rgb(grey)


MAX_PIXELS_ENV = "CORRMARK_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 120_000_000  # about 11000 x 11000: larger files are refused before they are decoded


def max_pixels() -> int:
    """The largest image (width x height) corrmark decodes: ``$CORRMARK_MAX_PIXELS``, else 120 megapixels."""
    configured = os.environ.get(MAX_PIXELS_ENV)
    try:
        return int(configured) if configured else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ImageReadError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got {configured!r}") from None


def _read_image_file(path: Path) -> np.ndarray:
    try:
        found = path.is_file()
        size = path.stat().st_size if found else 0
    except OSError as error:  # e.g. a file name longer than the file system allows
        raise ImageReadError(f"cannot open image {str(path)[:80]}...: {error.strerror or error}") from None
    if not found:
        raise ImageReadError(f"image file not found: {path}")
    if size == 0:
        raise ImageReadError(f"image file is empty: {path}")
    limit = max_pixels()
    pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours (max_pixels) applies instead, here only
    try:
        with Image.open(path) as handle:
            width, height = handle.size
            if width * height > limit:
                raise ImageReadError(f"image {path} is {width}x{height} = {width * height:,} pixels, above the limit "
                                     f"of {limit:,}; set {MAX_PIXELS_ENV} to raise it")
            handle.load()  # decodes everything now, so truncation is caught here
            return _pil_to_rgb(handle)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot decode image {path}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


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
    """Validate keypoints and return them as a float64 (N, 2) array (``[]`` gives (0, 2)).

    Raises ``InvalidKeypointsError`` for a wrong shape, NaN/inf values, or (when ``image_shape`` = (H, W) is given)
    points outside the image: a point is inside when -0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5 (pixel edges).
    The message names the offending indices and values; nothing is clamped.
    """
    array = _numeric_array(points, name)
    if array.size == 0:
        return np.zeros((0, 2))  # [] or an empty (0, 2) array: no points, an empty result
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


def _numeric_array(points, name: str) -> np.ndarray:
    """``points`` as float64, or an ``InvalidKeypointsError`` for text, mappings, ragged lists and non-real numbers."""
    if isinstance(points, (str, bytes, dict)) or points is None:
        raise InvalidKeypointsError(f"{name} must be an (N, 2) array or a list of [x, y] pairs, got "
                                    f"{type(points).__name__}")
    try:
        array = np.asarray(points)
    except (ValueError, TypeError):  # ragged nesting
        raise InvalidKeypointsError(f"{name} must be an (N, 2) array or a list of [x, y] pairs (ragged rows)") from None
    if array.size and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InvalidKeypointsError(f"{name} must hold real numbers, got {array.dtype} values")
    return array.astype(np.float64)


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
    """Read keypoints from JSON (a list of [x, y] pairs, or ``{"points": [[x, y], ...]}``) or CSV/TXT (one ``x,y``
    or ``x y`` per line; ``#`` comments and an ``x,y`` header line are skipped). Anything else, e.g. a row of three
    values, is an ``InvalidKeypointsError`` naming the file and the row: nothing is reshaped to fit."""
    return read_points_document(path)[0]


def read_points_document(path: str | os.PathLike) -> tuple[np.ndarray, list | None]:
    """``read_points_file`` plus the optional ``"names"`` of a JSON ``{"points", "names"}`` file (same length)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return points_from_json(read_json_file(path, "points file"), path)
    rows = []
    for number, line in enumerate(read_text_file(path, "points file").splitlines(), start=1):
        content = line.split("#")[0].strip()
        fields = [field.strip() for field in content.split(",")] if "," in content else content.split()
        if not content or (not rows and [value.lower() for value in fields] == ["x", "y"]):
            continue
        if len(fields) != 2:
            raise InvalidKeypointsError(f"points file {path}, line {number}: expected 'x,y', got {line.strip()!r}")
        try:
            rows.append([float(value) for value in fields])
        except ValueError:
            raise InvalidKeypointsError(f"points file {path}, line {number}: not numbers: {line.strip()!r}") from None
    return check_keypoints(np.asarray(rows, dtype=np.float64).reshape(-1, 2), name=f"points in {path}"), None


def points_from_json(data, path: Path) -> tuple[np.ndarray, list | None]:
    """(points, names or None) of a parsed JSON points file: ``[[x, y], ...]`` or ``{"points": ..., "names": ...}``."""
    names = None
    if isinstance(data, dict):
        names = data.get("names")
        data = data.get("points", data.get("keypoints"))
    points = point_rows(data, path, (2,))
    if names is not None and (not isinstance(names, list) or len(names) != len(points)
                              or not all(isinstance(name, str) for name in names)):
        raise InvalidKeypointsError(f"points file {path}: 'names' must be a list of {len(points)} strings")
    return check_keypoints(points, name=f"points in {path}"), names


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or binary file is one ``InvalidKeypointsError``."""
    try:
        found = path.is_file()
    except OSError as error:
        raise InvalidKeypointsError(f"cannot open {what} {str(path)[:80]}...: {error.strerror or error}") from None
    if not found:
        raise InvalidKeypointsError(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKeypointsError(f"{what} {path} is not a UTF-8 text file") from None
    except OSError as error:
        raise InvalidKeypointsError(f"cannot read {what} {path}: {error.strerror or error}") from None


def read_json_file(path: Path, what: str):
    """The JSON content of ``path``; unreadable, binary or malformed files are one ``InvalidKeypointsError``."""
    try:
        return json.loads(read_text_file(path, what))
    except ValueError as error:
        raise InvalidKeypointsError(f"cannot parse {what} {path}: {error}") from None


def all_real_numbers(values: list) -> bool:
    """Every item an int or float (JSON numbers); booleans, text and nesting are not."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def point_rows(data, path: Path, widths: tuple[int, ...]) -> np.ndarray:
    """A JSON list of rows of real numbers, every row of one of ``widths`` values (e.g. [x, y] or [x, y, v]), as an
    (N, width) float array; anything else is an ``InvalidKeypointsError`` naming the first bad row."""
    shapes = " or ".join(f"[{', '.join('xyv'[:width])}]" for width in widths)
    if not isinstance(data, list):
        raise InvalidKeypointsError(f"points file {path}: expected a list of {shapes} rows, got "
                                    f"{type(data).__name__}")
    width = None
    for index, row in enumerate(data):
        good = (isinstance(row, list) and len(row) in widths and (width is None or len(row) == width)
                and all_real_numbers(row))
        if not good:
            raise InvalidKeypointsError(f"points file {path}: row {index} is {json.dumps(row)[:60]}; every row must "
                                        f"be {shapes} (numbers, all rows alike)")
        width = len(row)
    return np.asarray(data, dtype=np.float64).reshape(len(data), width or widths[0])


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (or use it) and check that files can be written in it, before any work:
    a folder that is a file, cannot be created or is read-only is one ``OutputError`` naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} is an existing file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".corrmark-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"cannot write into output folder {path}: {error.strerror or error}") from None
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Check that the file ``path`` can be written (its folder is created); an ``OutputError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output file {path} is an existing folder; give a file name")
    prepare_output_dir(path.parent if str(path.parent) else Path("."))
    return path


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
