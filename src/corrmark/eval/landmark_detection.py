"""Running a landmark model over images: the landmarks of each image in its own pixels, and their export (JSON,
COCO keypoints, pictures) for ``corrmark landmarks``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import CorrmarkError
from ..formats import box_and_area, coco_keypoints
from ..io import ImageLike, read_image, write_json_atomic
from ..preprocess import image_to_tensor
from ..viz import colour, draw_points, save_image, with_legend
from ..viz.landmarks import landmark_figure


def detect_landmarks(model, images: Sequence[ImageLike], batch_size: int = 16, progress: bool = False
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``model.detect`` on images of any sizes (batched among consecutive images of one size).

    Returns ``points`` ``(N, K, 2)`` in pixels of each image and the heatmaps (one ``(K, h, w)`` array per image).
    """
    points: list[np.ndarray | None] = [None] * len(images)
    heatmaps: list[np.ndarray | None] = [None] * len(images)
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if not pending:
            return
        batch = torch.cat([image_to_tensor(image) for _, image in pending])
        maps, found = model.detect(batch)
        for (index, _), item_maps, item_points in zip(pending, maps, found):
            points[index] = item_points.detach().cpu().double().numpy()
            heatmaps[index] = item_maps.detach().cpu().float().numpy()
        pending.clear()

    for index in tqdm(range(len(images)), desc="landmarks", disable=not progress, unit="image"):
        image = read_image(images[index])
        if pending and (pending[0][1].shape != image.shape or len(pending) >= batch_size):
            flush()
        pending.append((index, image))
    flush()
    return np.stack(points) if points else np.zeros((0, 0, 2)), heatmaps


def export_landmarks(model, images: Sequence[ImageLike], out_dir: str | os.PathLike, batch_size: int = 8,
                     draw: bool = True, progress: bool = False) -> dict:
    """Detect landmarks on ``images`` (paths or arrays) and write into ``out_dir``:

    - ``landmarks.json``: ``{"model": ..., "num_landmarks": K, "images": [{"image", "shape", "points" (K x [x, y],
      0-based pixels of that image)}]}``;
    - ``landmarks.coco.json``: the same points as COCO keypoints (category ``landmarks`` with keypoints
      ``landmark0..K-1``, every point ``v = 2``), for annotation tools (CVAT, Label Studio's COCO import);
    - with ``draw``: ``<index>_<stem>.png`` per image with the landmarks drawn (colour = landmark index) and
      ``overview.png`` (all images in a grid).

    Returns ``{"json": path, "coco": path, "images": [png paths], "overview": path or None}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = [read_image(image) for image in images]
    if not arrays:
        raise CorrmarkError("give at least one image to detect landmarks on")
    points, _ = detect_landmarks(model, arrays, batch_size, progress=progress)
    names = [Path(str(image)).stem if isinstance(image, (str, os.PathLike)) else f"image{index}"
             for index, image in enumerate(images)]
    records, pictures = [], []
    for index, (image, array, found) in enumerate(zip(images, arrays, points)):
        records.append({"image": str(image) if isinstance(image, (str, os.PathLike)) else None,
                        "shape": list(array.shape[:2]), "points": np.round(found, 3).tolist()})
        if draw:
            picture = with_legend(draw_points(array, found, labels=list(range(len(found)))),
                                  [(colour(k), f"landmark {k}") for k in range(len(found))])
            pictures.append(str(save_image(picture, out_dir / f"{index:04d}_{names[index]}.png")))
    json_path = out_dir / "landmarks.json"
    write_json_atomic(json_path, {"model": model.describe() if hasattr(model, "describe") else None,
                                  "num_landmarks": int(points.shape[1]), "coordinates": "0-based pixels (x, y)",
                                  "images": records})
    coco_path = out_dir / "landmarks.coco.json"
    write_json_atomic(coco_path, landmarks_coco(records, names, int(points.shape[1])))
    overview = str(landmark_figure(arrays, points, out_dir / "overview.png")) if draw else None
    return {"json": str(json_path), "coco": str(coco_path), "images": pictures, "overview": overview}


def landmarks_coco(records: list[dict], names: list[str], count: int) -> dict:
    """COCO keypoints of detected landmarks: one image and one annotation per record (``export_landmarks``)."""
    images, annotations = [], []
    for index, (record, name) in enumerate(zip(records, names), start=1):
        points = np.asarray(record["points"], dtype=np.float64).reshape(-1, 2)
        images.append({"id": index, "file_name": Path(record["image"]).name if record["image"] else f"{name}.png",
                       "height": record["shape"][0], "width": record["shape"][1]})
        annotations.append({"id": index, "image_id": index, "category_id": 1, "iscrowd": 0,
                            "keypoints": coco_keypoints(points, np.full(len(points), 2.0), np.ones(len(points), bool)),
                            "num_keypoints": len(points), **box_and_area(points)})
    return {"info": {"description": "landmarks detected by corrmark landmarks"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "landmarks", "supercategory": "landmarks",
                            "keypoints": [f"landmark{k}" for k in range(count)], "skeleton": []}]}
