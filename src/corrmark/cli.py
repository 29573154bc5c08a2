"""Command-line interface: a thin shell over the Python API (parse, call, print/write).

    corrmark eval pf-willow --root DIR --matcher nn --backbone dinov2_vits14 --layers 8 --image-size 224 ...
    corrmark match SOURCE TARGET [--points FILE] --out DIR
    corrmark train CONFIG [--resume]
    corrmark eval-landmarks mtfl --root DIR --checkpoint F --json OUT.json
    corrmark landmarks IMAGES... --checkpoint F --out DIR
    corrmark demo [--out DIR]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .errors import CorrmarkError


def _add_matcher_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("matcher")
    group.add_argument("--matcher", default=None, help="matcher name (default: nn, the zero-shot matcher)")
    group.add_argument("--checkpoint", default=None, help="trained weights for a trained matcher")
    group.add_argument("--backbone", default=None,
                       help="backbone name(s); fuse with '+', e.g. dinov2_vits14+efficientnet_lite0")
    group.add_argument("--layers", nargs="+", default=None,
                       help="layers per backbone, comma-separated within one backbone: '--layers 8,9 3'")
    group.add_argument("--image-size", type=int, default=None, help="longer side the images are resized to")
    group.add_argument("--square", action="store_true", help="resize to a square instead of keeping the aspect")
    group.add_argument("--mutual", action="store_true", help="soft mutual-nearest-neighbour filtering")
    group.add_argument("--flip", choices=["none", "auto"], default=None, help="match the mirrored target too")
    group.add_argument("--sigma", type=float, default=None, help="kernel soft-argmax window (cells); 0 = hard argmax")
    group.add_argument("--beta", type=float, default=None, help="soft-argmax temperature")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")


def parse_layers(tokens: list[str] | None):
    """'8' -> [8]; '8,9' -> [8, 9]; '8 3' -> [[8], [3]] (one token per fused backbone)."""
    if tokens is None:
        return None
    try:
        groups = [[int(v) for v in token.split(",") if v != ""] for token in tokens]
    except ValueError:
        raise CorrmarkError(f"--layers takes integers, got {' '.join(tokens)}") from None
    return groups[0] if len(groups) == 1 else groups


def matcher_options(args) -> dict:
    """The matcher settings given on the command line (parsed, not yet loaded: cheap, so errors come first)."""
    return {
        "backbone": args.backbone,
        "layers": parse_layers(args.layers),
        "image_size": args.image_size,
        "keep_aspect": False if args.square else None,
        "mutual": True if args.mutual else None,
        "flip": args.flip,
        "beta": args.beta,
        "sigma": args.sigma,
    }


def matcher_from_args(args):
    from . import load_matcher

    return load_matcher(args.matcher or "nn", checkpoint=args.checkpoint, device=args.device, **matcher_options(args))


def _cmd_eval(args) -> int:
    from . import load_matcher
    from .data import open_dataset
    from .config import load_yaml
    from .eval.experiment import protocol_of, resolve_eval_experiment
    from .eval.runner import evaluate_matcher, format_pck_table
    from .io import write_json_atomic

    overrides = {
        "dataset": args.dataset, "root": args.root, "split": args.split, "matcher": args.matcher,
        "checkpoint": args.checkpoint, "matcher_options": matcher_options(args),
        "protocol": {"direction": args.direction, "threshold": args.threshold, "averaging": args.averaging,
                     "alphas": args.alphas, "resolution": _resolution(args.resolution)},
    }
    experiment = resolve_eval_experiment(load_yaml(args.config) if args.config else None, overrides)
    protocol = protocol_of(experiment)
    dataset = open_dataset(experiment["dataset"], experiment["root"], split=experiment["split"])
    spec = experiment["matcher"]
    matcher = load_matcher(spec["name"], checkpoint=spec["checkpoint"], device=args.device, **spec["options"])
    result = evaluate_matcher(matcher, dataset, protocol, limit=args.limit, progress=not args.quiet)
    result["config"] = args.config
    result["experiment"] = experiment
    result["command"] = "corrmark " + shlex.join(args.argv)
    print(format_pck_table(result))
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _resolution(text: str | None):
    if text is None or text == "original":
        return text
    try:
        return int(text)
    except ValueError:
        raise CorrmarkError(f"--resolution takes 'original' or an integer, got '{text}'") from None


def _cmd_match(args) -> int:
    from .api import match_pair

    summary = match_pair(matcher_from_args(args), args.source, args.target, args.out, points_file=args.points)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def _cmd_train(args) -> int:
    from .train import run_config

    final = run_config(args.config, out_dir=args.out, resume=args.resume, device=args.device, progress=not args.quiet)
    print(f"final checkpoint: {final}")
    return 0


def _cmd_eval_landmarks(args) -> int:
    from . import load_landmark_model
    from .data import open_image_dataset
    from .eval.landmarks import evaluate_landmarks, pfwillow_landmark_images
    from .io import write_json_atomic

    model = load_landmark_model(args.model, checkpoint=args.checkpoint, device=args.device)
    if args.dataset == "mtfl":
        train, test = (open_image_dataset("mtfl", args.root, split) for split in ("train", "test"))
        normalisation, per_category = "inter-ocular", False
    else:  # pf-willow: the image split of the SCorrSAN issue, error per subclass
        train, test = (pfwillow_landmark_images(args.root, split) for split in ("train", "test"))
        normalisation, per_category = "kp-bbox", True
    result = evaluate_landmarks(model, train, test, normalisation=normalisation, train_limit=args.train_limit,
                                test_limit=args.test_limit, figure=args.figure, progress=not args.quiet,
                                per_category=per_category)
    result["command"] = "corrmark " + shlex.join(args.argv)
    print(f"{args.dataset}: mean error {result['mean_error']:.2f}% of the {normalisation} length")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _cmd_landmarks(args) -> int:
    from . import load_landmark_model
    from .eval.landmarks import export_landmarks

    model = load_landmark_model(args.model, checkpoint=args.checkpoint, device=args.device)
    written = export_landmarks(model, args.images, args.out)
    print(f"landmarks of {len(args.images)} images: {written['json']}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, device=args.device, progress=not args.quiet)
    print(f"demo report: {report.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corrmark", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("eval", help="PCK of a matcher on a benchmark")
    evaluate.add_argument("dataset", nargs="?", default=None,
                          help="pf-willow, pf-pascal, spair-71k, tss, caltech-101, stanfordextra, pairs-file")
    evaluate.add_argument("--config", default=None, help="experiment YAML (configs/); command-line values override it")
    evaluate.add_argument("--root", default=None, help="dataset folder (or the pairs file for pairs-file)")
    evaluate.add_argument("--split", default=None, help="dataset split (e.g. test; pf-willow: all|train|test)")
    evaluate.add_argument("--direction", choices=["t2s", "s2t"], default=None, help="default t2s")
    evaluate.add_argument("--threshold", choices=["img", "bbox", "kp-bbox"], default=None, help="default kp-bbox")
    evaluate.add_argument("--averaging", choices=["pair", "keypoint"], default=None, help="default pair")
    evaluate.add_argument("--alphas", type=float, nargs="+", default=None, help="default 0.05 0.1 0.15")
    evaluate.add_argument("--resolution", default=None, help="'original' (default) or R: measure on RxR images")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    evaluate.add_argument("--json", default=None, help="write the result here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_matcher_options(evaluate)
    evaluate.set_defaults(handler=_cmd_eval)

    match = commands.add_parser("match", help="match two images: mapping, warp, overlay, points")
    match.add_argument("source")
    match.add_argument("target")
    match.add_argument("--points", default=None, help="source keypoints (JSON [[x, y], ...] or CSV x,y)")
    match.add_argument("--out", required=True, help="output folder")
    _add_matcher_options(match)
    match.set_defaults(handler=_cmd_match)

    train = commands.add_parser("train", help="train a method from an experiment config (configs/*.yaml)")
    train.add_argument("config", help="experiment YAML with a 'method:' key")
    train.add_argument("--out", default=None, help="output folder (default: the config's 'output', else runs/<name>)")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    train.add_argument("--device", default="cpu")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(handler=_cmd_train)

    landmark_eval = commands.add_parser("eval-landmarks", help="landmark error: linear regression to annotations")
    landmark_eval.add_argument("dataset", choices=["mtfl", "pf-willow"],
                               help="mtfl: train -> AFLW test, inter-ocular; pf-willow: image split, kp-bbox")
    landmark_eval.add_argument("--root", required=True)
    landmark_eval.add_argument("--checkpoint", required=True)
    landmark_eval.add_argument("--model", default="jlad", help="landmark model name (default: jlad)")
    landmark_eval.add_argument("--train-limit", type=int, default=None, help="fit the regression on N training images")
    landmark_eval.add_argument("--test-limit", type=int, default=None)
    landmark_eval.add_argument("--figure", default=None, help="PNG of discovered landmarks on test images")
    landmark_eval.add_argument("--json", default=None)
    landmark_eval.add_argument("--device", default="cpu")
    landmark_eval.add_argument("--quiet", action="store_true")
    landmark_eval.set_defaults(handler=_cmd_eval_landmarks)

    landmarks = commands.add_parser("landmarks", help="detect, draw and export landmarks (JSON) on images")
    landmarks.add_argument("images", nargs="+")
    landmarks.add_argument("--checkpoint", required=True)
    landmarks.add_argument("--model", default="jlad")
    landmarks.add_argument("--out", required=True)
    landmarks.add_argument("--device", default="cpu")
    landmarks.set_defaults(handler=_cmd_landmarks)

    demo = commands.add_parser("demo", help="match the bundled example pairs and write an HTML report")
    demo.add_argument("--out", default="corrmark-demo", help="output folder (default: corrmark-demo)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with results, so every number names the command that produced it
    try:
        return args.handler(args)
    except CorrmarkError as error:
        print(f"corrmark: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("corrmark: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
