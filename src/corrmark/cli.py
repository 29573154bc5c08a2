"""Command-line interface: a thin shell over the Python API (parse, call, print/write).

    corrmark eval pf-willow --root DIR --matcher nn --backbone dinov2_vits14 --layers 8 --image-size 224 ...
    corrmark match SOURCE TARGET [--points FILE] --out DIR
    corrmark train CONFIG [--resume]
    corrmark eval-landmarks mtfl --root DIR --checkpoint F --json OUT.json
    corrmark landmarks IMAGES... --checkpoint F --out DIR
    corrmark demo [--out DIR] [--pairs N] [--matchers NAME ...] [--no-trained]
    corrmark export CHECKPOINT OUT.pt
    corrmark zoo [--check]
    corrmark propagate --annotated IMG [IMG ...] --points POINTS [POINTS ...] IMAGES_DIR --out OUT.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import __version__
from .device import resolve_device
from .errors import CorrmarkError
from .formats import VISIBLE_THRESHOLD

DEVICE_HELP = "auto (default: the first CUDA GPU when there is one, else cpu), cpu, cuda or cuda:N"


def _add_matcher_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("matcher")
    group.add_argument("--matcher", default=None, help="matcher name (default: nn, the zero-shot matcher)")
    group.add_argument("--checkpoint", default=None, help="trained weights for a trained matcher")
    group.add_argument("--preset", default=None,
                       help="named zero-shot settings for the nn matcher: dinov2-block8 or best (options below override)")
    group.add_argument("--backbone", default=None,
                       help="backbone name(s); fuse with '+', e.g. dinov2_vits14+efficientnet_lite0")
    group.add_argument("--layers", nargs="+", default=None,
                       help="layers per backbone, comma-separated within one backbone: '--layers 8,9 3'")
    group.add_argument("--image-size", type=int, default=None,
                       help="side of the square the images are resized to (default 336)")
    aspect = group.add_mutually_exclusive_group()
    aspect.add_argument("--square", action="store_true", help="resize to an IMAGE_SIZE square (the default)")
    aspect.add_argument("--keep-aspect", action="store_true",
                        help="keep the aspect ratio at the area of the IMAGE_SIZE square (never fewer cells)")
    group.add_argument("--mutual", action="store_true", help="soft mutual-nearest-neighbour filtering")
    group.add_argument("--flip", choices=["none", "auto"], default=None, help="match the mirrored target too")
    group.add_argument("--sigma", type=float, default=None, help="kernel soft-argmax window (cells); 0 = hard argmax")
    group.add_argument("--beta", type=float, default=None, help="soft-argmax temperature")
    group.add_argument("--device", default="auto", help=DEVICE_HELP)


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
        "preset": args.preset,
        "backbone": args.backbone,
        "layers": parse_layers(args.layers),
        "image_size": args.image_size,
        "keep_aspect": False if args.square else True if args.keep_aspect else None,
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
    from .config import load_config_file
    from .eval.experiment import protocol_of, resolve_eval_experiment
    from .eval.runner import evaluate_matcher, format_pck_table
    from .io import write_json_atomic

    overrides = {
        "dataset": args.dataset, "root": args.root, "split": args.split, "matcher": args.matcher,
        "checkpoint": args.checkpoint, "matcher_options": matcher_options(args),
        "protocol": {"direction": args.direction, "threshold": args.threshold, "averaging": args.averaging,
                     "alphas": args.alphas, "resolution": _resolution(args.resolution)},
    }
    experiment = resolve_eval_experiment(load_config_file(args.config) if args.config else None, overrides)
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
    from .train import DistributedSetup, load_config, run_config, seeded_config

    config, out_dir = load_config(args.config, args.set or ()), args.out
    if args.seed is not None:  # a repeat of the experiment with another seed, in its own folder
        config = seeded_config(config, args.seed)
        out_dir = out_dir or config["output"]
    final = run_config(config, out_dir=out_dir, resume=args.resume, device=args.device, progress=not args.quiet)
    setup = DistributedSetup.from_environment()
    if setup is None or setup.is_main:  # under torchrun one line, not one per process
        print(f"final checkpoint: {final}")
    return 0


def _cmd_eval_landmarks(args) -> int:
    from . import load_landmark_model
    from .data import open_image_dataset
    from .eval.landmarks import coco_landmark_images, evaluate_landmarks, pfwillow_landmark_images
    from .io import write_json_atomic

    if args.dataset == "folder":
        return _equivariance_of_folder(args)
    if args.dataset == "coco":
        if not (args.fit and args.test):
            raise CorrmarkError("eval-landmarks coco needs --fit FIT.json and --test TEST.json (COCO keypoints)")
        train, test = coco_landmark_images(args.fit, args.root), coco_landmark_images(args.test, args.root)
        categories = {train[index]["category"] for index in range(len(train))}
        normalisation, per_category = args.normalisation or "kp-bbox", len(categories) > 1  # one regressor each
    elif not args.root:
        raise CorrmarkError(f"eval-landmarks {args.dataset} needs --root (the dataset folder)")
    elif args.dataset == "mtfl":
        train, test = (open_image_dataset("mtfl", args.root, split) for split in ("train", "test"))
        normalisation, per_category = args.normalisation or "inter-ocular", False
    else:  # pf-willow: the image split of the SCorrSAN issue, error per subclass
        train, test = (pfwillow_landmark_images(args.root, split) for split in ("train", "test"))
        normalisation, per_category = args.normalisation or "kp-bbox", True
    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    result = evaluate_landmarks(model, train, test, normalisation=normalisation, eyes=parse_eyes(args.eyes),
                                train_limit=args.train_limit, test_limit=args.test_limit, figure=args.figure,
                                progress=not args.quiet, per_category=per_category)
    result["command"] = "corrmark " + shlex.join(args.argv)
    print(f"{args.dataset}: mean error {result['mean_error']:.2f}% of the {normalisation} length")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _equivariance_of_folder(args) -> int:
    """``eval-landmarks folder``: images without annotations -> the label-free equivariance error."""
    from . import load_landmark_model
    from .data import open_image_dataset
    from .eval.landmarks import landmark_equivariance
    from .io import write_json_atomic

    if not args.root:
        raise CorrmarkError("eval-landmarks folder needs --root (the image folder)")
    folder = open_image_dataset("image-folder", args.root, load_images=False)
    paths = [str(folder[index]["path"]) for index in range(len(folder))][:args.test_limit]
    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    result = landmark_equivariance(model, paths, progress=not args.quiet)
    result["command"] = "corrmark " + shlex.join(args.argv)
    print(f"folder: equivariance error {result['mean_error']:.2f}% of the image side (median "
          f"{result['median_error']:.2f}%, {len(paths)} images; points at fixed positions score about 7%)")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _cmd_landmarks(args) -> int:
    from . import load_landmark_model
    from .eval.landmarks import export_landmarks

    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    written = export_landmarks(model, args.images, args.out, progress=not args.quiet)
    print(f"landmarks of {len(args.images)} images: {written['json']}")
    return 0


def parse_eyes(text: str) -> tuple[int, int]:
    """``"0,1"`` -> ``(0, 1)``: the two eye keypoints of the inter-ocular length."""
    try:
        first, second = (int(part) for part in text.split(","))
    except ValueError:
        raise CorrmarkError(f"--eyes takes two keypoint indices like 0,1, got {text!r}") from None
    return first, second


def landmark_model_name(args) -> str:
    """--model, else the method the checkpoint was trained with (``config.method``: jlad or c3), else jlad."""
    if args.model is not None:
        return args.model
    from .models import LANDMARK_MODELS
    from .train.checkpoint import read_checkpoint

    method = (read_checkpoint(args.checkpoint).get("config") or {}).get("method")
    return method if method in LANDMARK_MODELS else "jlad"


def _cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, device=args.device, progress=not args.quiet, pairs=args.pairs,
                      matchers=args.matchers, trained=not args.no_trained)
    print(f"demo report: {report.resolve()}")
    return 0


def _cmd_export(args) -> int:
    from .train.export import export_weights, file_sha256

    written = export_weights(args.checkpoint, args.out)
    print(f"weights-only export: {written} ({written.stat().st_size / 1e6:.1f} MB, sha256 {file_sha256(written)})")
    return 0


def _cmd_zoo(args) -> int:
    from tqdm import tqdm

    from .zoo import check_zoo_entry, list_zoo, zoo_dir

    folder = args.folder or zoo_dir()
    entries = list_zoo(folder)
    print(f"model zoo: {Path(folder).resolve()}")
    checking = tqdm(entries, desc="loading zoo models", unit="model", disable=not args.check or args.quiet,
                    leave=False)
    for entry in checking:
        state = "present" if entry.available else "missing"
        if args.check and entry.available:
            state = check_zoo_entry(entry, device=args.device)
        tqdm.write(f"{entry.name:28s} {entry.method:9s} {entry.kind:10s} {entry.file:32s} {state}")
    return 0


def _cmd_propagate(args) -> int:
    from .propagate import propagate_keypoints, read_annotation, read_coco_context

    images_dir = _propagate_images_dir(args)
    if len(args.points) not in (1, len(args.annotated)):
        raise CorrmarkError(f"give one --points file, or one per --annotated image ({len(args.annotated)})")
    points_files = args.points if len(args.points) > 1 else args.points * len(args.annotated)
    annotations = [read_annotation(points, image) for points, image in zip(points_files, args.annotated)]
    coco_out, label_studio = args.out, None
    if args.format == "label-studio":  # the COCO document stays beside it: it is what a later run resumes
        coco_out, label_studio = str(Path(args.out).with_suffix("")) + ".coco.json", args.out
    summary = propagate_keypoints(
        matcher_from_args(args), [(image, points, visible) for image, (points, visible, _) in
                                  zip(args.annotated, annotations)],
        images_dir, coco_out, gallery_dir=args.gallery, resume=not args.no_resume, progress=not args.quiet,
        keypoint_names=annotations[0][2], category=args.category, recursive=args.recursive,
        coco=read_coco_context(points_files[0]), visible_threshold=args.visible_threshold,
        label_studio=label_studio, image_url_prefix=args.image_url_prefix)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def _propagate_images_dir(args) -> str:
    """IMAGES_DIR, also when written right after the multi-value --points or --annotated (argparse hands it to them;
    a folder is never a points file or an image, so it is taken back)."""
    if args.images_dir is not None:
        return args.images_dir
    for values in (args.points, args.annotated):
        if len(values) > 1 and Path(values[-1]).is_dir():
            return values.pop()
    raise CorrmarkError("give the IMAGES_DIR folder to propagate to")


def _cmd_bench(args) -> int:
    from .bench import format_row, run_bench
    from .io import write_json_atomic

    report = (lambda row: None) if args.quiet else (lambda row: print(format_row(row), flush=True))
    result = run_bench(args.matcher, args.preset, args.sizes, args.pairs, args.pf_willow, args.repeats, args.device,
                       args.threads, report)
    result["command"] = "corrmark " + shlex.join(args.argv)
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corrmark", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"corrmark {__version__}")
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
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value (YAML), e.g. --set train.steps=50 --set data.limit=100; the run "
                            "is then named after the overrides (runs/<name>__<overrides>)")
    train.add_argument("--device", default="auto", help=DEVICE_HELP)
    train.add_argument("--quiet", action="store_true")
    train.add_argument("--seed", type=int, default=None,
                       help="override the config's seed; the default output folder gets a _seed<N> suffix")
    train.set_defaults(handler=_cmd_train)

    landmark_eval = commands.add_parser("eval-landmarks", help="landmark error: linear regression to annotations")
    landmark_eval.add_argument("dataset", choices=["mtfl", "pf-willow", "coco", "folder"],
                               help="mtfl: train -> AFLW test, inter-ocular; pf-willow: image split, kp-bbox; "
                                    "coco: your own images, --fit and --test COCO keypoints files, kp-bbox; "
                                    "folder: images of --root without annotations, equivariance under known warps")
    landmark_eval.add_argument("--root", default=None,
                               help="dataset folder (mtfl, pf-willow); for coco the image folder (default: each "
                                    "JSON file's folder)")
    landmark_eval.add_argument("--fit", default=None, help="coco: annotations the regression is fitted on")
    landmark_eval.add_argument("--test", default=None, help="coco: annotations the error is measured on")
    landmark_eval.add_argument("--normalisation", choices=["inter-ocular", "kp-bbox"], default=None,
                               help="error length (default: inter-ocular for mtfl, kp-bbox otherwise)")
    landmark_eval.add_argument("--eyes", default="0,1", help="inter-ocular: indices of the two eye keypoints")
    landmark_eval.add_argument("--checkpoint", required=True)
    landmark_eval.add_argument("--model", default=None,
                               help="landmark model: jlad or c3 (default: the checkpoint's method, else jlad)")
    landmark_eval.add_argument("--train-limit", type=int, default=None, help="fit the regression on N training images")
    landmark_eval.add_argument("--test-limit", type=int, default=None)
    landmark_eval.add_argument("--figure", default=None, help="PNG of discovered landmarks on test images")
    landmark_eval.add_argument("--json", default=None)
    landmark_eval.add_argument("--device", default="auto", help=DEVICE_HELP)
    landmark_eval.add_argument("--quiet", action="store_true")
    landmark_eval.set_defaults(handler=_cmd_eval_landmarks)

    landmarks = commands.add_parser("landmarks", help="detect, draw and export landmarks (JSON) on images")
    landmarks.add_argument("images", nargs="+")
    landmarks.add_argument("--checkpoint", required=True)
    landmarks.add_argument("--model", default=None,
                           help="landmark model: jlad or c3 (default: the checkpoint's method, else jlad)")
    landmarks.add_argument("--out", required=True)
    landmarks.add_argument("--quiet", action="store_true", help="no progress bar")
    landmarks.add_argument("--device", default="auto", help=DEVICE_HELP)
    landmarks.set_defaults(handler=_cmd_landmarks)

    demo = commands.add_parser("demo", help="zero-shot and trained matchers on the bundled pairs: an HTML report")
    demo.add_argument("--out", default="corrmark-demo", help="output folder (default: corrmark-demo)")
    demo.add_argument("--pairs", type=int, default=None, help="use the first N bundled pairs only")
    demo.add_argument("--matchers", nargs="+", default=None,
                      help="run only these: zero-shot 'dinov2-block8', 'best', and/or zoo model names")
    demo.add_argument("--no-trained", action="store_true", help="zero-shot matchers only (no model zoo weights)")
    demo.add_argument("--device", default="auto", help=DEVICE_HELP)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(handler=_cmd_demo)

    export = commands.add_parser("export", help="weights-only copy of a training checkpoint (for the model zoo)")
    export.add_argument("checkpoint", help="training checkpoint, e.g. runs/NAME/final.pt")
    export.add_argument("out", help="file to write, e.g. zoo/NAME.pt")
    export.set_defaults(handler=_cmd_export)

    zoo = commands.add_parser("zoo", help="list the model zoo (zoo/zoo.yaml) and which weights files are present")
    zoo.add_argument("--folder", default=None, help="zoo folder (default: $CORRMARK_ZOO, else zoo/ of the checkout)")
    zoo.add_argument("--check", action="store_true", help="also load every present model through its loader")
    zoo.add_argument("--quiet", action="store_true", help="no progress bar")
    zoo.add_argument("--device", default="auto", help=DEVICE_HELP)
    zoo.set_defaults(handler=_cmd_zoo)

    propagate = commands.add_parser("propagate", help="transfer keypoints from annotated images to a folder (COCO)")
    propagate.add_argument("images_dir", nargs="?", default=None, metavar="IMAGES_DIR")
    propagate.add_argument("--annotated", nargs="+", required=True, help="annotated image(s)")
    propagate.add_argument("--points", nargs="+", required=True,
                           help="their keypoints: COCO keypoints JSON (one file may cover all), [[x, y(, v)], ...] "
                                "JSON or CSV x,y; one per --annotated image")
    propagate.add_argument("--out", required=True, help="COCO keypoints JSON to write (resumed if it exists)")
    propagate.add_argument("--gallery", default=None, help="folder for an HTML gallery to review the points")
    propagate.add_argument("--no-resume", action="store_true", help="start over instead of skipping done images")
    propagate.add_argument("--recursive", action="store_true", help="include images in subfolders")
    propagate.add_argument("--category", default="object",
                           help="COCO category name (default: object; a COCO --points file's own category wins)")
    propagate.add_argument("--format", choices=["coco", "label-studio"], default="coco",
                           help="--out as COCO keypoints (default) or Label Studio predictions (then the COCO "
                                "document is written beside it as OUT.coco.json)")
    propagate.add_argument("--visible-threshold", type=float, default=VISIBLE_THRESHOLD,
                           help=f"confidence from which a point is written v=2 (below: v=1); default {VISIBLE_THRESHOLD}")
    propagate.add_argument("--image-url-prefix", default="",
                           help="Label Studio: data.image = PREFIX + file name (e.g. /data/local-files/?d=dogs/)")
    propagate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_matcher_options(propagate)
    propagate.set_defaults(handler=_cmd_propagate)

    bench = commands.add_parser("bench", help="seconds per pair and peak memory per matcher and image size (JSON)")
    bench.add_argument("--matcher", nargs="+", default=None, metavar="NAME[:CHECKPOINT]",
                       help="matchers to measure, e.g. nn sfnet:runs/sfnet_cub/final.pt")
    bench.add_argument("--preset", nargs="+", default=None,
                       help="zero-shot nn presets to measure (default without --matcher: dinov2-block8 best)")
    bench.add_argument("--sizes", type=int, nargs="+", default=None,
                       help="image sizes (default: each matcher's own; a checkpoint's fixed size is measured once)")
    bench.add_argument("--pairs", type=int, default=None,
                       help="number of pairs (default: all bundled examples, or 20 PF-WILLOW pairs)")
    bench.add_argument("--pf-willow", default=None, metavar="ROOT", help="time PF-WILLOW pairs instead of the examples")
    bench.add_argument("--repeats", type=int, default=1, help="times each pair is timed (default 1)")
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    bench.add_argument("--json", default=None, help="write the rows here")
    bench.add_argument("--device", default="auto", help=DEVICE_HELP)
    bench.add_argument("--quiet", action="store_true", help="do not print each row")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with results, so every number names the command that produced it
    try:
        if hasattr(args, "device"):
            args.device = str(resolve_device(args.device))
        return args.handler(args)
    except CorrmarkError as error:
        print(f"corrmark: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("corrmark: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
