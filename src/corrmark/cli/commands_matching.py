"""Commands over matchers: ``eval`` (PCK on a benchmark), ``match`` (one pair), ``propagate`` (annotated images to
a folder) and ``bench`` (speed and memory)."""

from __future__ import annotations

from pathlib import Path

from ..api import match_pair
from ..bench import DEFAULT_PF_WILLOW_PAIRS, DEFAULT_PRESETS, format_row, run_bench
from ..config import load_config_file
from ..data import PAIR_DATASETS, open_dataset
from ..data.subset import every_kth
from ..errors import CorrmarkError
from ..eval.experiment import PROTOCOL_DEFAULTS, protocol_of, resolve_eval_experiment
from ..eval.runner import evaluate_matcher, format_pck_table
from ..formats import VISIBLE_THRESHOLD
from ..models import load_matcher
from ..propagate import merge_shard_files, propagate_keypoints, read_annotation, read_coco_context
from ..train.distributed import DistributedSetup, device_for
from .options import (add_device_option, add_matcher_options, add_precision_option, given, library_default,
                      matcher_from_args, matcher_options, parse_eyes, write_result)


# --- eval -------------------------------------------------------------------------------------------------------------


def add_eval_parser(commands) -> None:
    protocol = PROTOCOL_DEFAULTS
    evaluate = commands.add_parser("eval", help="PCK of a matcher on a benchmark")
    evaluate.add_argument("dataset", nargs="?", default=None, help=f"one of: {', '.join(PAIR_DATASETS)}")
    evaluate.add_argument("--config", default=None, help="experiment YAML (configs/); command-line values override it")
    evaluate.add_argument("--root", default=None, help="dataset folder (or the pairs file for pairs-file)")
    evaluate.add_argument("--split", default=None, help="dataset split (e.g. test; pf-willow: all|train|test)")
    evaluate.add_argument("--direction", choices=["t2s", "s2t"], default=None, help=f"default {protocol['direction']}")
    evaluate.add_argument("--threshold", choices=["img", "bbox", "kp-bbox"], default=None,
                          help=f"default {protocol['threshold']}")
    evaluate.add_argument("--averaging", choices=["pair", "keypoint"], default=None,
                          help=f"default {protocol['averaging']}")
    evaluate.add_argument("--alphas", type=float, nargs="+", default=None,
                          help=f"default {' '.join(str(alpha) for alpha in protocol['alphas'])}")
    evaluate.add_argument("--resolution", default=None,
                          help=f"'{protocol['resolution']}' (default) or R: measure on RxR images")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    evaluate.add_argument("--every", type=int, default=None,
                          help="score every K-th pair only (PF-WILLOW lists its pairs by subclass: a stratified "
                               "subset)")
    evaluate.add_argument("--breeds", nargs="+", default=None,
                          help="stanfordextra: only the pairs within these breeds (e.g. a held-out breed)")
    evaluate.add_argument("--eyes", default=None,
                          help="faces (aflw-pairs): also the PCK with the inter-ocular threshold, the distance "
                               "between these two keypoints, e.g. 0,1")
    evaluate.add_argument("--json", default=None, help="write the result here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_matcher_options(evaluate)
    evaluate.set_defaults(handler=run_eval)


def run_eval(args) -> int:
    overrides = {
        "dataset": args.dataset, "root": args.root, "split": args.split, "matcher": args.matcher,
        "checkpoint": args.checkpoint, "matcher_options": matcher_options(args),
        "protocol": {"direction": args.direction, "threshold": args.threshold, "averaging": args.averaging,
                     "alphas": args.alphas, "resolution": _resolution(args.resolution)},
        "dataset_options": {"breeds": args.breeds}, "every": args.every, "eyes": parse_eyes(args.eyes),
    }
    experiment = resolve_eval_experiment(load_config_file(args.config) if args.config else None, overrides)
    protocol = protocol_of(experiment)
    dataset = open_dataset(experiment["dataset"], experiment["root"], split=experiment["split"],
                           **experiment["dataset_options"])
    if experiment["every"]:
        dataset = every_kth(dataset, experiment["every"])
    spec = experiment["matcher"]
    matcher = load_matcher(spec["name"], checkpoint=spec["checkpoint"], device=args.device, **spec["options"])
    eyes = tuple(experiment["eyes"]) if experiment["eyes"] else None
    result = evaluate_matcher(matcher, dataset, protocol, limit=args.limit, progress=not args.quiet, eyes=eyes)
    print(format_pck_table(result))
    metrics = {key: value for key, value in result.items() if key not in ("protocol", "machine")}
    write_result(args, metrics, protocol=result["protocol"], model=spec, config=args.config,
                 extra={"experiment": experiment})
    return 0


def _resolution(text: str | None):
    if text is None or text == "original":
        return text
    try:
        return int(text)
    except ValueError:
        raise CorrmarkError(f"--resolution takes 'original' or an integer, got '{text}'") from None


# --- match ------------------------------------------------------------------------------------------------------------


def add_match_parser(commands) -> None:
    match = commands.add_parser("match", help="match two images: mapping, warp, overlay, points")
    match.add_argument("source")
    match.add_argument("target")
    match.add_argument("--points", default=None, help="source keypoints (JSON [[x, y], ...] or CSV x,y)")
    match.add_argument("--out", required=True, help="output folder")
    add_matcher_options(match)
    match.set_defaults(handler=run_match)


def run_match(args) -> int:
    summary = match_pair(matcher_from_args(args), args.source, args.target, args.out, points_file=args.points)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


# --- propagate --------------------------------------------------------------------------------------------------------


def add_propagate_parser(commands) -> None:
    category = library_default(propagate_keypoints, "category")
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
    propagate.add_argument("--category", default=None,
                           help=f"COCO category name (default: {category}; a COCO --points file's own category wins)")
    propagate.add_argument("--format", choices=["coco", "label-studio"], default="coco",
                           help="--out as COCO keypoints (default) or Label Studio predictions (then the COCO "
                                "document is written beside it as OUT.coco.json)")
    propagate.add_argument("--visible-threshold", type=float, default=None,
                           help=f"confidence from which a point is written v=2 (below: v=1); "
                                f"default {VISIBLE_THRESHOLD}")
    propagate.add_argument("--image-url-prefix", default=None,
                           help="Label Studio: data.image = PREFIX + file name (e.g. /data/local-files/?d=dogs/)")
    propagate.add_argument("--workers", type=int, default=None,
                           help=f"processes that decode the next images while one is matched (default "
                                f"{library_default(propagate_keypoints, 'workers')}: read in turn)")
    propagate.add_argument("--batch-size", type=int, default=None,
                           help=f"images a --workers process decodes at a time (default "
                                f"{library_default(propagate_keypoints, 'batch_size')})")
    propagate.add_argument("--shard", default=None, metavar="RANK/WORLD",
                           help="propagate only shard RANK of WORLD (e.g. 0/4, one job per machine) to "
                                "OUT.shard-RANK-of-WORLD.json; join them with propagate-merge. Under torchrun the "
                                "shards are made and merged without it")
    propagate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_matcher_options(propagate)
    propagate.set_defaults(handler=run_propagate)
    _add_propagate_merge_parser(commands)


def _add_propagate_merge_parser(commands) -> None:
    merge = commands.add_parser("propagate-merge",
                                help="merge the OUT.shard-RANK-of-WORLD.json files of a sharded propagate into OUT")
    merge.add_argument("out", metavar="OUT", help="the --out of the sharded propagate runs")
    merge.add_argument("--format", choices=["coco", "label-studio"], default="coco", help="as given to propagate")
    merge.add_argument("--image-url-prefix", default="", help="Label Studio: as given to propagate")
    merge.set_defaults(handler=run_propagate_merge)


def run_propagate(args) -> int:
    images_dir = _propagate_images_dir(args)
    if len(args.points) not in (1, len(args.annotated)):
        raise CorrmarkError(f"give one --points file, or one per --annotated image ({len(args.annotated)})")
    points_files = args.points if len(args.points) > 1 else args.points * len(args.annotated)
    annotations = [read_annotation(points, image) for points, image in zip(points_files, args.annotated)]
    coco_out, label_studio = _propagate_outputs(args)
    shard = _shard(args.shard)  # before the matcher loads: a typo fails at once
    setup = DistributedSetup.from_environment()  # under torchrun: --device cuda is this process's GPU
    if setup is not None:
        args.device = str(device_for(args.device, setup))
    summary = propagate_keypoints(
        matcher_from_args(args), [(image, points, visible) for image, (points, visible, _) in
                                  zip(args.annotated, annotations)],
        images_dir, coco_out, gallery_dir=args.gallery, resume=not args.no_resume, progress=not args.quiet,
        keypoint_names=annotations[0][2], recursive=args.recursive, coco=read_coco_context(points_files[0]),
        label_studio=label_studio, shard=shard,
        **given(category=args.category, visible_threshold=args.visible_threshold,
                image_url_prefix=args.image_url_prefix, workers=args.workers, batch_size=args.batch_size))
    if setup is None or setup.is_main:  # rank 0 reports the merged output
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0


def run_propagate_merge(args) -> int:
    coco_out, label_studio = _propagate_outputs(args)
    for key, value in merge_shard_files(coco_out, label_studio, args.image_url_prefix).items():
        print(f"{key}: {value}")
    return 0


def _propagate_outputs(args) -> tuple[str, str | None]:
    """(COCO document, Label Studio predictions or None) of --out and --format."""
    if args.format == "label-studio":  # the COCO document stays beside it: it is what a later run resumes
        return str(Path(args.out).with_suffix("")) + ".coco.json", args.out
    return args.out, None


def _shard(text: str | None) -> tuple[int, int] | None:
    """'RANK/WORLD' -> (rank, world)."""
    if text is None:
        return None
    try:
        rank, world_size = (int(value) for value in text.split("/"))
    except ValueError:
        rank, world_size = -1, 0
    if not 0 <= rank < world_size:
        raise CorrmarkError(f"--shard takes RANK/WORLD with 0 <= RANK < WORLD, e.g. 0/4, got '{text}'")
    return rank, world_size


def _propagate_images_dir(args) -> str:
    """IMAGES_DIR, also when written right after the multi-value --points or --annotated (argparse hands it to them;
    a folder is never a points file or an image, so it is taken back)."""
    if args.images_dir is not None:
        return args.images_dir
    for values in (args.points, args.annotated):
        if len(values) > 1 and Path(values[-1]).is_dir():
            return values.pop()
    raise CorrmarkError("give the IMAGES_DIR folder to propagate to")


# --- bench ------------------------------------------------------------------------------------------------------------


def add_bench_parser(commands) -> None:
    bench = commands.add_parser("bench", help="seconds per pair and peak memory per matcher and image size (JSON)")
    bench.add_argument("--matcher", nargs="+", default=None, metavar="NAME[:CHECKPOINT]",
                       help="matchers to measure, e.g. nn sfnet:runs/sfnet_cub/final.pt")
    bench.add_argument("--preset", nargs="+", default=None,
                       help=f"zero-shot nn presets to measure (default without --matcher: {' '.join(DEFAULT_PRESETS)})")
    bench.add_argument("--sizes", type=int, nargs="+", default=None,
                       help="image sizes (default: each matcher's own; a checkpoint's fixed size is measured once)")
    bench.add_argument("--pairs", type=int, default=None,
                       help=f"number of pairs (default: all bundled examples, or {DEFAULT_PF_WILLOW_PAIRS} "
                            f"PF-WILLOW pairs)")
    bench.add_argument("--pf-willow", default=None, metavar="ROOT", help="time PF-WILLOW pairs instead of the examples")
    bench.add_argument("--repeats", type=int, default=None,
                       help=f"times each pair is timed (default {library_default(run_bench, 'repeats')})")
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    bench.add_argument("--json", default=None, help="write the rows here")
    add_device_option(bench)
    add_precision_option(bench)
    bench.add_argument("--quiet", action="store_true", help="do not print each row")
    bench.set_defaults(handler=run_bench_command)


def run_bench_command(args) -> int:
    report = (lambda row: None) if args.quiet else (lambda row: print(format_row(row), flush=True))
    result = run_bench(args.matcher, args.preset, args.sizes, args.pairs, args.pf_willow, device=args.device,
                       threads=args.threads, report=report, precision=args.precision, **given(repeats=args.repeats))
    protocol = {"pairs_from": result["pairs_from"], "pairs": result["pairs"], "threads": args.threads,
                "repeats": args.repeats or library_default(run_bench, "repeats"), "device": args.device,
                "precision": args.precision or "fp32"}
    write_result(args, result, protocol=protocol,
                 model={"matchers": args.matcher, "presets": args.preset, "sizes": args.sizes})
    return 0
