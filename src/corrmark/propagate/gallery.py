"""The review gallery of a propagation: one figure per image and an HTML page, least confident first."""

from __future__ import annotations

from pathlib import Path

from ..errors import ImageReadError
from ..io import read_image
from ..viz import Report, colour, save_image
from ..viz.propagation import confidence_colour, draw_propagation
from .confidence import CONFIDENCE_RULE
from .inputs import AnnotatedImage


def figure_path(figures_dir: Path, file_name: str) -> Path:
    return Path(figures_dir) / (file_name.replace("/", "__") + ".jpg")


def write_gallery(coco: dict, sources: list[AnnotatedImage], root: Path, gallery_dir, title: str = "") -> Path:
    """``gallery_dir/index.html``: every propagated image, least confident first, with the failures listed.

    Figures missing from ``gallery_dir/figures`` (images propagated by an earlier run without a gallery) are drawn
    from the output; nothing is matched again.
    """
    gallery_dir = Path(gallery_dir)
    figures_dir = gallery_dir / "figures"
    images = {image["id"]: image for image in coco["images"]}
    annotations = sorted(coco["annotations"], key=lambda annotation: annotation["score"])
    items = []
    for annotation in annotations:
        file_name = images[annotation["image_id"]]["file_name"]
        path = figure_path(figures_dir, file_name)
        if not path.is_file():
            try:
                save_image(draw_propagation(sources, annotation, read_image(root / file_name)), path)
            except ImageReadError:
                continue  # the image was moved or deleted since it was propagated
        caption = f"{file_name}: score {annotation['score']:.2f}, {annotation['num_keypoints']} points"
        items.append((path.relative_to(gallery_dir).as_posix(), caption))
    report = Report(f"Keypoint propagation {title}".strip())
    report.paragraph(f"{len(items)} images, least confident first. Left: the annotated image that gave most points; "
                     f"right: propagated points coloured by confidence (red 0, yellow 0.5, green 1), numbered by "
                     f"keypoint. Confidence: {CONFIDENCE_RULE}.")
    report.legend([(confidence_colour(value), f"confidence {value:g}") for value in (0.0, 0.25, 0.5, 0.75, 1.0)],
                  title="Right image, point colour")
    names = (coco.get("categories") or [{}])[0].get("keypoints") or []
    report.legend([(colour(index), f"{index} {name}") for index, name in enumerate(names)],
                  title="Keypoint numbers (left image: dot colours)")
    if coco["failed"]:
        report.table(["failed image", "reason"], [[e["file_name"], e["reason"]] for e in coco["failed"]])
    report.figures(items)
    return report.write(gallery_dir / "index.html")
