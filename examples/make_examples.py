"""Maintainer script: rebuild examples/ (the demo's bundled pairs) from the shared datasets.

Usage: python examples/make_examples.py /path/to/shared/data
It copies a handful of PF-WILLOW and StanfordExtra images (resized copies, JPEG) and writes examples/pairs.json with
0-based keypoints, plus a few CUB test-split birds (no keypoints) for the zoo's bird landmark model. The demo itself
only reads examples/, never the datasets.
"""

import csv
import json
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
WILLOW_PAIRS = [("car(G)/Cars_006a.png", "car(G)/Cars_013b.png"), ("duck(S)/060_0000.png", "060_0026.png"),
                ("motorbike(S)/Motorbikes_004b.png", "Motorbikes_030.png")]
DOG_PAIRS = [("n02087394-Rhodesian_ridgeback/n02087394_10591.jpg", "n02087394-Rhodesian_ridgeback/n02087394_681.jpg"),
             ("n02099601-golden_retriever/n02099601_176.jpg", "n02093754-Border_terrier/n02093754_1148.jpg")]

# CUB test split (never in a training config's train split): three birds facing left, one facing right
BIRD_IMAGES = ["Red_winged_Blackbird/0030.jpg", "American_Goldfinch/0040.jpg", "Blue_Jay/0031.jpg",
               "Scarlet_Tanager/0041.jpg"]

MAX_SIDE = 400


def copy_image(source: Path, name: str) -> tuple[str, float]:
    """Copy as JPEG, shrunk so the longer side is at most MAX_SIDE; returns the path and the scale applied."""
    image = Image.open(source).convert("RGB")
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    image.save(HERE / "images" / name, quality=90)
    return f"images/{name}", scale


def scaled(points: list, scale: float) -> list:
    # pixel centres scale about the image corner: x' = (x + 0.5) * s - 0.5
    return [[(x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5] for x, y in points]


def willow_pairs(root: Path) -> list[dict]:
    rows = {(r["source_image"], r["target_image"]): r for r in csv.DictReader(open(root / "test_pairs_all_ordered.csv"))}
    pairs = []
    for source, target in WILLOW_PAIRS:
        subclass = source.split("/")[0]
        key = (f"PF-dataset-WILLOW/{source}", f"PF-dataset-WILLOW/{subclass}/{Path(target).name}")
        row = rows[key]
        as_points = lambda xs, ys: [[float(x) - 1, float(y) - 1] for x, y in zip(xs.split(";"), ys.split(";"))]
        source_path, source_scale = copy_image(root / key[0], f"willow_{Path(key[0]).stem}.jpg")
        target_path, target_scale = copy_image(root / key[1], f"willow_{Path(key[1]).stem}.jpg")
        pairs.append({
            "category": row["category"], "source": source_path, "target": target_path,
            "source_points": scaled(as_points(row["XA"], row["YA"]), source_scale),
            "target_points": scaled(as_points(row["XB"], row["YB"]), target_scale),
            "licence": "PF-WILLOW (Ham et al. 2016; images from WILLOW-ObjectClass): academic use",
        })
    return pairs


def dog_pairs(root: Path) -> list[dict]:
    records = {r["img_path"]: r for r in json.load(open(root / "StanfordExtra_sample.json"))}
    pairs = []
    for source, target in DOG_PAIRS:
        a, b = records[source], records[target]
        both = [i for i in range(24) if a["joints"][i][2] > 0 and b["joints"][i][2] > 0]
        source_path, source_scale = copy_image(root / "sample_imgs" / source, f"dog_{Path(source).stem}.jpg")
        target_path, target_scale = copy_image(root / "sample_imgs" / target, f"dog_{Path(target).stem}.jpg")
        pairs.append({
            "category": "dog", "source": source_path, "target": target_path,
            "source_points": scaled([a["joints"][i][:2] for i in both], source_scale),
            "target_points": scaled([b["joints"][i][:2] for i in both], target_scale),
            "licence": "StanfordExtra annotations (MIT, Biggs et al. 2020); images from Stanford Dogs / ImageNet: research use",
        })
    return pairs


def bird_images(root: Path) -> list[dict]:
    images = []
    for relative in BIRD_IMAGES:
        path, _ = copy_image(root / "images" / relative, f"bird_{relative.replace('/', '_')}")
        images.append({"image": path, "category": "bird",
                       "licence": "CUB-200-2011 (Wah et al. 2011; Flickr images): non-commercial research use"})
    return images


def main() -> None:
    data = Path(sys.argv[1])
    (HERE / "images").mkdir(exist_ok=True)
    pairs = willow_pairs(data / "pf-willow") + dog_pairs(data / "stanfordextra-sample")
    images = bird_images(data / "cub-birds-unlabeled")
    (HERE / "pairs.json").write_text(json.dumps({"pairs": pairs, "images": images}, indent=1) + "\n")


if __name__ == "__main__":
    main()
