"""Keypoint propagation on the 25 StanfordExtra dogs, scored against their ground truth.

    OMP_NUM_THREADS=1 python benchmarks/propagate_stanfordextra.py --preset best
    OMP_NUM_THREADS=1 python benchmarks/propagate_stanfordextra.py --preset dinov2-block8

Writes benchmarks/results/propagate/propagate_stanfordextra_<preset>.json. This protocol (propagation scored against
ground truth, with its confidence analysis) is script-only; it runs ``corrmark.propagate.propagate_keypoints``.

Protocol (written into the result):
- one annotated dog, each of the 25 in turn: its visible keypoints are propagated with ``propagate_keypoints`` to the
  other 24 (600 ordered pairs). PCK@alpha per pair, averaged over pairs; a point counts when it is visible in both
  dogs; L = max(w, h) of the box around the target's visible keypoints; a point the propagation left out is wrong.
  ``pck_eval_protocol`` repeats the numbers with the box of `corrmark eval` (points visible in both), which must
  match the StanfordExtra rows of docs/BENCHMARKS.md: propagation transfers exactly what `corrmark eval` does.
- confidence vs correctness, pooled over the keypoints of those 600 pairs: PCK of the more / less confident half,
  per confidence bin, the AUROC of the confidence for "correct at alpha 0.1", and the same for the matcher's cosine
  similarity (``keypoint_similarities``).
- three annotated dogs (``TRIPLETS``: one from every 8th image, so mixed breeds), combined per point by confidence,
  propagated to the other 22; compared with the mean and the best of the three single-dog propagations on the same
  targets. Matches are memoised, so this part costs no matching.
"""

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import results_dir, write_script_result
from scipy.stats import mannwhitneyu, spearmanr

from corrmark import load_matcher
from corrmark.data.stanfordextra import StanfordExtra
from corrmark.eval.pck import DEFAULT_ALPHAS, alpha_key, threshold_length
from corrmark.models import Matcher
from corrmark.propagate import coco_points, propagate_keypoints

TRIPLETS = [(first, first + 8, first + 16) for first in range(8)]
CONFIDENCE_BINS = (0.0, 0.1, 0.3, 0.6, 1.0001)
ALPHA_FOR_RANKING = 0.1


class MemoMatcher(Matcher):
    """Remembers every transfer (by image contents and points), so the multi-dog runs reuse the single-dog matches."""

    def __init__(self, inner):
        self.inner, self.name, self.memo = inner, inner.name, {}

    def estimate_mapping(self, source, target):
        return self.inner.estimate_mapping(source, target)

    def match_points(self, source, target, points):
        key = (_digest(source), _digest(target), np.asarray(points, dtype=np.float64).tobytes())
        if key not in self.memo:
            self.memo[key] = self.inner.match_points(source, target, points)
        return self.memo[key]

    def transfer_keypoints(self, source, target, points):
        return self.match_points(source, target, points)[0]

    def describe(self):
        return self.inner.describe()


def _digest(image: np.ndarray) -> tuple:
    return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest(), image.shape


def propagate_from(matcher, dogs, annotated: list[int], work_dir: Path, gallery=None) -> dict:
    """Propagate from the given dogs to all 25; returns {image index: (points, confidence, similarity)}."""
    items = [(dogs[i]["path"], np.nan_to_num(dogs[i]["points"]), np.isfinite(dogs[i]["points"]).all(axis=1))
             for i in annotated]
    out = work_dir / f"from_{'_'.join(map(str, annotated))}.json"
    propagate_keypoints(matcher, items, [dog["path"] for dog in dogs], out, gallery_dir=gallery, progress=False)
    coco = json.loads(out.read_text())
    by_name = {image["file_name"]: image["id"] for image in coco["images"]}
    annotations = {annotation["image_id"]: annotation for annotation in coco["annotations"]}
    root = Path(coco["info"]["images_root"])
    results = {}
    for index, dog in enumerate(dogs):
        annotation = annotations[by_name[dog["path"].absolute().relative_to(root).as_posix()]]
        points, confidence = coco_points(annotation)
        similarity = np.asarray([np.nan if s is None else s for s in annotation["keypoint_similarities"]], float) \
            if "keypoint_similarities" in annotation else np.full(len(points), np.nan)
        results[index] = (points, confidence, similarity)
    return results


def labelled(dog: dict) -> np.ndarray:
    return np.isfinite(dog["points"]).all(axis=1)


def pair_keypoints(annotated: np.ndarray, target_dog: dict, prediction) -> dict:
    """Per keypoint labelled in the annotated dog(s) (``annotated`` (N,) bool) and visible in the target: the error
    over the target's box (the protocol's, and corrmark eval's box of the points visible in both)."""
    points, confidence, similarity = prediction
    truth = target_dog["points"]
    target_visible = labelled(target_dog)
    valid = target_visible & annotated
    length = threshold_length("kp-bbox", target_dog["shape"], points=truth, valid=target_visible)
    length_eval = threshold_length("kp-bbox", target_dog["shape"], points=truth, valid=valid)
    error = np.linalg.norm(points[valid] - truth[valid], axis=1)
    error = np.where(np.isfinite(error), error, np.inf)  # left out = wrong
    return {"error": error / length, "error_eval": error / length_eval, "confidence": confidence[valid],
            "similarity": similarity[valid]}


def pck_over_pairs(pairs: list[dict], key: str = "error") -> dict:
    return {alpha_key(a): float(np.mean([np.mean(p[key] <= a) for p in pairs if len(p[key])])) for a in DEFAULT_ALPHAS}


def pooled_pck(errors: np.ndarray) -> dict:
    return {alpha_key(a): float(np.mean(errors <= a)) if len(errors) else None for a in DEFAULT_ALPHAS}


def ranking_quality(scores: np.ndarray, errors: np.ndarray) -> dict:
    """How well a per-point score separates correct from wrong points (pooled keypoints)."""
    known = np.isfinite(scores)
    scores, errors = scores[known], errors[known]
    order = np.argsort(-scores, kind="stable")
    top, rest = order[: len(order) // 2], order[len(order) // 2:]
    correct = errors <= ALPHA_FOR_RANKING
    auroc = mannwhitneyu(scores[correct], scores[~correct]).statistic / (correct.sum() * (~correct).sum())
    finite = np.isfinite(errors)
    return {"keypoints": int(len(scores)), "pck_top_half": pooled_pck(errors[top]),
            "pck_bottom_half": pooled_pck(errors[rest]), f"auroc_correct_at_{ALPHA_FOR_RANKING:g}": float(auroc),
            "spearman_vs_error": float(spearmanr(scores[finite], errors[finite]).statistic)}


def calibration(confidence: np.ndarray, errors: np.ndarray) -> list[dict]:
    rows = []
    for low, high in zip(CONFIDENCE_BINS[:-1], CONFIDENCE_BINS[1:]):
        chosen = (confidence >= low) & (confidence < high)
        rows.append({"confidence": f"[{low:g}, {min(high, 1):g}{']' if high > 1 else ')'}",
                     "keypoints": int(chosen.sum()), "pck": pooled_pck(errors[chosen])})
    return rows


def single_dog_protocol(matcher, dogs, work_dir: Path, gallery) -> tuple[dict, dict]:
    """Each dog annotated in turn; returns the metrics and every single-dog prediction for reuse."""
    predictions, pairs = {}, []
    for source in range(len(dogs)):
        started = time.perf_counter()
        predictions[source] = propagate_from(matcher, dogs, [source], work_dir, gallery if source == 0 else None)
        pairs += [pair_keypoints(labelled(dogs[source]), dogs[target], predictions[source][target])
                  for target in range(len(dogs)) if target != source]
        print(f"annotated dog {source + 1}/{len(dogs)}: {time.perf_counter() - started:.1f} s", flush=True)
    pooled = {key: np.concatenate([pair[key] for pair in pairs]) for key in pairs[0]}
    metrics = {
        "pairs": len(pairs), "keypoints": int(len(pooled["error"])),
        "pck": pck_over_pairs(pairs), "pck_eval_protocol": pck_over_pairs(pairs, "error_eval"),
        "confidence": ranking_quality(pooled["confidence"], pooled["error"]),
        "similarity": ranking_quality(pooled["similarity"], pooled["error"]),
        "calibration": calibration(pooled["confidence"], pooled["error"]),
    }
    return metrics, predictions


def three_dog_protocol(matcher, dogs, single: dict, work_dir: Path, triplets) -> dict | None:
    """Three annotated dogs combined by confidence vs each of them alone, on two point sets: the points at least one
    of the three labels (what the combination covers) and the points all three label (only the choice differs)."""
    if not triplets:
        return None
    rows = {"any": [], "all": []}
    for triplet in triplets:
        predictions = propagate_from(matcher, dogs, list(triplet), work_dir)
        targets = [t for t in range(len(dogs)) if t not in triplet]
        masks = [labelled(dogs[i]) for i in triplet]
        for name, mask in (("any", np.any(masks, axis=0)), ("all", np.all(masks, axis=0))):
            combined = pck_over_pairs([pair_keypoints(mask, dogs[t], predictions[t]) for t in targets])
            singles = [pck_over_pairs([pair_keypoints(mask, dogs[t], single[i][t]) for t in targets]) for i in triplet]
            rows[name].append({"combined": combined,
                               "single_mean": {k: float(np.mean([s[k] for s in singles])) for k in combined},
                               "single_best": {k: float(max(s[k] for s in singles)) for k in combined}})
    result = {"triplets": [list(t) for t in triplets], "targets_per_triplet": len(dogs) - 3,
              "note": "per triplet PCK over its targets, then the mean over triplets; single_best picks the best of "
                      "the three dogs in hindsight; on 'any' points a dog that does not label a point leaves it out "
                      "(wrong) in its single-dog run"}
    for name, entries in rows.items():
        result[f"points_labelled_by_{name}"] = {
            method: {k: float(np.mean([entry[method][k] for entry in entries])) for k in entries[0][method]}
            for method in entries[0]}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="../shared/data/stanfordextra-sample")
    parser.add_argument("--preset", default="best", choices=["best", "fused-block8", "dinov2-block8"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gallery", default=None, help="also write the gallery of the first annotated dog here")
    parser.add_argument("--out-dir", default=str(results_dir("propagate")), help="results folder")
    parser.add_argument("--dogs", type=int, default=None, help="only the first N dogs (a quick check)")
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = StanfordExtra(args.root, load_images=False)
    dogs = dataset.images[: args.dogs]
    triplets = [triplet for triplet in TRIPLETS if max(triplet) < len(dogs)]
    matcher = MemoMatcher(load_matcher("nn", preset=args.preset, device=args.device))
    with tempfile.TemporaryDirectory() as work:
        single, predictions = single_dog_protocol(matcher, dogs, Path(work), args.gallery)
        three = three_dog_protocol(matcher, dogs, predictions, Path(work), triplets)
    metrics = {"one_annotated_dog": single, "three_annotated_dogs": three}
    protocol = {
        "task": "propagate the annotated dog's visible keypoints to every other dog (s2t)",
        "threshold": "kp-bbox: max(w, h) of the box around the target's visible keypoints",
        "valid": "keypoints visible in the annotated and the target dog", "averaging": "per pair",
        "alphas": list(DEFAULT_ALPHAS), "missing_prediction": "wrong",
        "confidence_analysis": f"pooled keypoints; halves by confidence rank; AUROC for error <= {ALPHA_FOR_RANKING}",
    }
    config = {"matcher": matcher.describe(), "preset": args.preset, "root": args.root, "images": len(dogs),
              "annotated": "each dog in turn; then the TRIPLETS of three dogs"}
    write_script_result(Path(args.out_dir) / f"propagate_stanfordextra_{args.preset.replace('-', '_')}.json", metrics,
                        protocol, {"name": "nn", "preset": args.preset, "matcher": config.pop("matcher")},
                        config=config, seconds=time.perf_counter() - started)
    print(f"PCK one dog: {single['pck']}  (corrmark eval box: {single['pck_eval_protocol']})")
    ranking = single["confidence"]
    print(f"confidence: top half {ranking['pck_top_half']}, rest {ranking['pck_bottom_half']}")
    if three:
        for name in ("any", "all"):
            print(f"three dogs, points labelled by {name}: {three[f'points_labelled_by_{name}']}")


if __name__ == "__main__":
    main()
