"""Evaluate SCorrSAN checkpoints (or the zero-shot references) under the SCorrSAN protocols; one JSON per row.

Protocols (docs/SCORRSAN.md), all t2s (target keypoints -> source, scored on the source), per-pair averaging:

- ``faces``: the seeded AFLW test pair list (``--count`` faces chosen with ``--seed`` from MTFL ``testing.txt``,
  pair i = (face i, face i+1 mod count)); thresholds kp-bbox and inter-ocular (eyes = landmarks 0 and 1).
- ``pf-willow``: the 200 test pairs of the PF-WILLOW split by image (images 5-9 of each subclass); kp-bbox.
- ``stanfordextra``: one leave-one-breed-out fold (``--held-out-breed``, a name or an index of the case-insensitively
  sorted breeds): every ordered pair of dogs of the held-out breed, keypoints visible in both; kp-bbox. The pair set
  is closed under reversal, so these t2s numbers equal s2t (kp-bbox of the target) exactly.

What is evaluated:

- ``--checkpoint F``: a trained head (``--head`` picks an MT head; ``selected.pt`` carries the validated one), on
  cached frozen features of the test images (``--path bank``, fast) or through ``load_matcher("scorrsan")`` image by
  image (``--path matcher``; the same numbers, checked by tests/test_scorrsan.py on a tiny model).
- ``--untrained``: the same pipeline without a head (frozen descriptor, mutual filter, x4 upsampling, windowed soft
  argmax): what training adds (a reference row, script-only).
- ``--nn-preset best``: the repository's zero-shot matcher (``load_matcher("nn", preset=...)``) image by image.

The image-by-image rows (``--path matcher``, ``--nn-preset``) run ``corrmark.eval.evaluate_matcher`` on the dataset
``corrmark eval`` opens, so each is also one command (docs/BENCHMARKS.md): faces = ``corrmark eval aflw-pairs --root
MTFL --eyes 0,1``, pf-willow = ``corrmark eval pf-willow --split test``, stanfordextra = ``corrmark eval stanfordextra
--breeds BREED``, each with ``--direction t2s --threshold kp-bbox`` and ``--matcher scorrsan --checkpoint F`` or
``--preset NAME``.

Example::

    PYTHONPATH=src python benchmarks/scorrsan_eval.py --protocol faces \
        --checkpoint runs/scorrsan_faces_baseline/final.pt \
        --json benchmarks/results/scorrsan/scorrsan_faces_baseline.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import SHARED_DATA, write_script_result

from corrmark import load_matcher
from corrmark.data import open_dataset
from corrmark.data.keypoint_pairs import FacePairs, build_keypoint_bank, pfwillow_images, stanfordextra_fold
from corrmark.errors import CorrmarkError
from corrmark.eval.pck import PCKProtocol
from corrmark.eval.runner import evaluate_matcher
from corrmark.models.scorrsan import ScorrsanConfig, ScorrsanHead, head_from_checkpoint
from corrmark.ops import l2_normalize
from corrmark.train.checkpoint import read_checkpoint
from corrmark.train.scorrsan import evaluate_pairs

ALPHAS = (0.05, 0.1, 0.15)
DEFAULT_ROOTS = {"faces": SHARED_DATA / "mtfl", "pf-willow": SHARED_DATA / "pf-willow",
                 "stanfordextra": SHARED_DATA / "stanfordextra-sample"}
FACE_EYES = (0, 1)  # MTFL: left eye, right eye


class UntrainedHead(ScorrsanHead):
    """The SCorrSAN pipeline on the frozen descriptor itself (no SCE, no fusion)."""

    def describe_features(self, features):
        return l2_normalize(features)


def test_bank(protocol: str, root, model: ScorrsanConfig, count: int, seed: int, held_out_breed=None):
    """``(bank, pairs, categories, description)`` of the protocol's test pairs."""
    if protocol == "faces":
        faces = FacePairs(root, count, seed, load_images=False)
        bank = build_keypoint_bank(faces.items, model.backbone, model.layers, model.image_size, views=1)
        return bank, faces.pairs, None, faces.describe()
    if protocol == "stanfordextra":
        fold = stanfordextra_fold(root, held_out_breed)
        bank = build_keypoint_bank(fold.test_items, model.backbone, model.layers, model.image_size, views=1)
        return bank, fold.test_pairs, [fold.held_out_breed] * len(fold.test_pairs), {
            "name": "stanfordextra", "held_out_breed": fold.held_out_breed, "images": len(fold.test_items),
            "pairs": len(fold.test_pairs), "split_rule": "every ordered pair within the held-out breed"}
    items, pairs, pair_ids = pfwillow_images(root, "test")
    bank = build_keypoint_bank(items, model.backbone, model.layers, model.image_size, views=1)
    categories = [pair_id.split("/")[0] for pair_id in pair_ids]
    return bank, pairs, categories, {"name": "pf-willow", "split": "test", "pairs": len(pairs),
                                     "split_rule": "images 5-9 (sorted by name) of each subclass"}


def check_same_fold(config: dict, test_set: dict) -> None:
    """A leave-one-breed-out checkpoint may only be tested on its own held-out breed (else it saw those dogs)."""
    trained_without = (config.get("data_info") or {}).get("held_out_breed")
    tested_on = test_set.get("held_out_breed")
    if tested_on is not None and trained_without != tested_on:
        raise CorrmarkError(f"this checkpoint held out {trained_without!r} in training; its test breed must be the "
                            f"same, got {tested_on!r}")


def evaluate_matcher_pairs(matcher, dataset, interocular: bool, limit=None) -> dict:
    """t2s PCK of any Matcher on pair samples (``corrmark.eval.evaluate_matcher``, what ``corrmark eval`` runs):
    kp-bbox (and inter-ocular for faces), per pair, as ``{"kp-bbox": ..., "inter-ocular": ...}``."""
    result = evaluate_matcher(matcher, dataset, PCKProtocol("t2s", "kp-bbox", "pair", ALPHAS), limit=limit,
                              progress=False, eyes=FACE_EYES if interocular else None)
    keys = ("pck", "per_category", "mean_over_categories", "pairs", "keypoints", "skipped_pairs", "protocol")
    metrics = {"kp-bbox": {key: result[key] for key in keys}}
    if interocular:
        metrics["inter-ocular"] = result["inter-ocular"]
    return metrics


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["faces", "pf-willow", "stanfordextra"], required=True)
    parser.add_argument("--root", default=None)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint")
    what.add_argument("--untrained", action="store_true")
    what.add_argument("--nn-preset")
    parser.add_argument("--untrained-options", default=None,
                        help="JSON dict of ScorrsanConfig fields for --untrained (e.g. another backbone)")
    parser.add_argument("--head", type=int, default=None)
    parser.add_argument("--path", choices=["bank", "matcher"], default="bank")
    parser.add_argument("--count", type=int, default=1000, help="faces: test faces (= pairs)")
    parser.add_argument("--seed", type=int, default=0, help="faces: pair-list seed")
    parser.add_argument("--held-out-breed", type=breed_argument, default=None,
                        help="stanfordextra: the fold's held-out breed (name or index)")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of the list only")
    parser.add_argument("--label", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.root) if args.root else DEFAULT_ROOTS[args.protocol]
    started = time.perf_counter()
    interocular = args.protocol == "faces"
    config, evaluated = None, {}
    if args.nn_preset:
        matcher = load_matcher("nn", preset=args.nn_preset)
        dataset = _dataset(args, root)
        metrics = evaluate_matcher_pairs(matcher, dataset, interocular, args.limit)
        evaluated = {"matcher": matcher.describe(), "path": "matcher"}
        named = {"name": "nn", "preset": args.nn_preset}
    elif args.path == "matcher":
        matcher = load_matcher("scorrsan", checkpoint=args.checkpoint, head=args.head)
        config = read_checkpoint(args.checkpoint)["config"]
        if args.protocol == "stanfordextra":
            check_same_fold(config, {"held_out_breed": _held_out_breed(args, root)})
        metrics = evaluate_matcher_pairs(matcher, _dataset(args, root), interocular, args.limit)
        evaluated = {"matcher": matcher.describe(), "path": "matcher"}
        named = {"name": "scorrsan", "checkpoint": args.checkpoint, "head": args.head}
    else:
        if args.untrained:
            model = ScorrsanConfig(**{**json.loads(args.untrained_options or "{}"), "sce": False})
            bank, pairs, categories, description = test_bank(args.protocol, root, model, args.count, args.seed,
                                                             args.held_out_breed)
            head = UntrainedHead(model, bank.channels, bank.stride).eval()
            evaluated = {"untrained_pipeline": model.to_dict(), "path": "bank"}
            named = {"name": "scorrsan-untrained", "options": model.to_dict()}
        else:
            payload = read_checkpoint(args.checkpoint)
            config = payload["config"]
            head, model, _ = head_from_checkpoint(payload, args.head)
            bank, pairs, categories, description = test_bank(args.protocol, root, model, args.count, args.seed,
                                                             args.held_out_breed)
            check_same_fold(config, description)
            evaluated = {"checkpoint": args.checkpoint, "head": args.head, "path": "bank",
                         "selected_head": (payload.get("metrics") or {}).get("selected_head"),
                         "train_metrics": payload.get("metrics")}
            named = {"name": "scorrsan", "checkpoint": args.checkpoint, "head": args.head}
        if args.limit is not None:
            pairs = pairs[:args.limit]
            categories = categories[:args.limit] if categories is not None else None
        metrics = evaluate_pairs(head, bank, pairs, ALPHAS, interocular=interocular, categories=categories)
        metrics["test_set"] = description
    pf_willow_split = "test (images 5-9 per subclass, 200 pairs)" if args.protocol == "pf-willow" else None
    protocol = {"name": args.protocol, "direction": "t2s", "averaging": "pair", "alphas": list(ALPHAS),
                "thresholds": ["kp-bbox", "inter-ocular"] if interocular else ["kp-bbox"],
                "faces": {"count": args.count, "seed": args.seed} if interocular else None, "limit": args.limit,
                "pf_willow_split": pf_willow_split}
    if args.protocol == "stanfordextra":
        protocol["held_out_breed"] = _held_out_breed(args, root)
    return write_result(args.json, args.label, argv, protocol, named, evaluated, config, metrics,
                        time.perf_counter() - started)


def write_result(json_path, label, argv, protocol, model, evaluated, config, metrics, seconds) -> dict:
    """One benchmark row (``corrmark.eval.records.record_result``: command, model, config, protocol, metrics,
    seconds, machine; plus ``label`` and ``evaluated``); prints a one-line PCK summary."""
    label = label or Path(json_path).stem
    result = write_script_result(json_path, metrics, protocol, model, config=config, seconds=seconds,
                                 extra={"label": label, "evaluated": evaluated}, argv=argv)
    summary = {name: {k: round(v, 4) for k, v in block["pck"].items() if v is not None}
               for name, block in metrics.items() if isinstance(block, dict) and "pck" in block}
    print(json.dumps({"label": label, **summary, "seconds": result["seconds"]}))
    return result


def breed_argument(text: str):
    return int(text) if text.isdigit() else text  # "2" is the fold index, "Weimaraner" a name


def _held_out_breed(args, root) -> str:
    return stanfordextra_fold(root, args.held_out_breed).held_out_breed


def _dataset(args, root):
    """The protocol's test pairs as ``corrmark eval`` opens them (``open_dataset``)."""
    if args.protocol == "faces":
        return open_dataset("aflw-pairs", root, count=args.count, seed=args.seed)
    if args.protocol == "stanfordextra":  # same images and pair order as the fold
        return open_dataset("stanfordextra", root, breeds=[_held_out_breed(args, root)])
    return open_dataset("pf-willow", root, "test")


if __name__ == "__main__":
    main()
