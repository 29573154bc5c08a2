"""Commands over landmark models: ``eval-landmarks`` (the regression protocol, or equivariance on a bare folder) and
``landmarks`` (detect, draw and export)."""

from __future__ import annotations

import os

from ..checkpoints import read_checkpoint
from ..config import load_config_file
from ..data import open_image_dataset
from ..data.sources import collect_source_images
from ..errors import CorrmarkError
from ..eval.landmark_detection import export_landmarks
from ..eval.landmark_images import ImageRecords, coco_landmark_images, images_at, pfwillow_landmark_images
from ..eval.landmarks import BENCHMARK_PROTOCOLS, equivariance_images, evaluate_landmarks, landmark_equivariance
from ..models import LANDMARK_MODELS, load_landmark_model
from ..train import METHODS
from .options import add_device_option, given, parse_eyes, write_result

DEFAULT_LANDMARK_MODEL = "jlad"  # for a checkpoint that does not name its method
# --equivariance: the image collection whose test split is sampled
EQUIVARIANCE_DATASETS = {"mtfl": "mtfl", "cub": "cub-unlabeled"}


def model_help() -> str:
    return (f"landmark model: {', '.join(LANDMARK_MODELS)} (default: the checkpoint's method, else "
            f"{DEFAULT_LANDMARK_MODEL})")


def add_eval_landmarks_parser(commands) -> None:
    length = {name: protocol["normalisation"] for name, protocol in BENCHMARK_PROTOCOLS.items()}
    landmark_eval = commands.add_parser("eval-landmarks", help="landmark error: linear regression to annotations")
    landmark_eval.add_argument("dataset", choices=["mtfl", "pf-willow", "coco", "folder", "cub"],
                               help=f"mtfl: train -> AFLW test, {length['mtfl']}; pf-willow: image split, "
                                    f"{length['pf-willow']}; coco: your own images, --fit and --test COCO keypoints "
                                    f"files, {length['coco']}; folder: images of --root without annotations, "
                                    f"equivariance under known warps; cub: CUB test birds (no annotations: "
                                    f"equivariance on --test-limit seeded birds)")
    landmark_eval.add_argument("--root", default=None,
                               help="dataset folder (mtfl, pf-willow); for coco the image folder (default: each "
                                    "JSON file's folder)")
    landmark_eval.add_argument("--fit", default=None, help="coco: annotations the regression is fitted on")
    landmark_eval.add_argument("--test", default=None, help="coco: annotations the error is measured on")
    landmark_eval.add_argument("--normalisation", choices=["inter-ocular", "kp-bbox"], default=None,
                               help=f"error length (default: {length['mtfl']} for mtfl, {length['coco']} otherwise)")
    landmark_eval.add_argument("--eyes", default=None, help="inter-ocular: indices of the two eye keypoints")
    landmark_eval.add_argument("--checkpoint", required=True)
    landmark_eval.add_argument("--model", default=None, help=model_help())
    landmark_eval.add_argument("--train-limit", type=int, default=None, help="fit the regression on N training images")
    landmark_eval.add_argument("--fit-config", default=None, metavar="CONFIG",
                               help=f"mtfl: fit the regression on the training images of this "
                                    f"{' or '.join(fit_config_rules())} config (its data.sources and data seed, e.g. a "
                                    f"centre-cropped MTFL copy) instead of --root's training split")
    landmark_eval.add_argument("--test-limit", type=int, default=None)
    landmark_eval.add_argument("--equivariance", action="store_true",
                               help="mtfl: the label-free equivariance error on --test-limit seeded AFLW faces "
                                    "instead of the regression")
    landmark_eval.add_argument("--figure", default=None,
                               help="figure of discovered landmarks on test images (.jpg: small; or .png)")
    landmark_eval.add_argument("--json", default=None)
    add_device_option(landmark_eval)
    landmark_eval.add_argument("--quiet", action="store_true")
    landmark_eval.set_defaults(handler=run_eval_landmarks)


def run_eval_landmarks(args) -> int:
    if args.dataset == "folder":
        return _equivariance_of_folder(args)
    if args.dataset == "cub" or args.equivariance:
        return _equivariance_of_test_split(args)
    if args.dataset == "coco":
        if not (args.fit and args.test):
            raise CorrmarkError("eval-landmarks coco needs --fit FIT.json and --test TEST.json (COCO keypoints)")
        train, test = coco_landmark_images(args.fit, args.root), coco_landmark_images(args.test, args.root)
    elif not args.root:
        raise CorrmarkError(f"eval-landmarks {args.dataset} needs --root (the dataset folder)")
    elif args.dataset == "mtfl":
        train = (config_fit_images(args.fit_config) if args.fit_config
                 else open_image_dataset("mtfl", args.root, "train"))
        test = open_image_dataset("mtfl", args.root, "test")
    else:  # pf-willow: the image split of the SCorrSAN issue, error per subclass
        train, test = (pfwillow_landmark_images(args.root, split) for split in ("train", "test"))
    protocol = BENCHMARK_PROTOCOLS[args.dataset]
    normalisation, per_category = args.normalisation or protocol["normalisation"], protocol["per_category"]
    if per_category == "auto":  # one regressor per category when the fit images show several
        per_category = len({train[index]["category"] for index in range(len(train))}) > 1
    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    result = evaluate_landmarks(model, train, test, normalisation=normalisation, train_limit=args.train_limit,
                                test_limit=args.test_limit, figure=args.figure, progress=not args.quiet,
                                per_category=per_category, **given(eyes=parse_eyes(args.eyes)))
    print(f"{args.dataset}: mean error {result['mean_error']:.2f}% of the {normalisation} length")
    _write_landmark_result(args, result)
    return 0


def fit_config_rules() -> dict:
    """--fit-config: landmark methods whose trainer registered how it picks its training images, by name."""
    return {name: METHODS.entry(name).info.get("source_rules") for name in LANDMARK_MODELS
            if name in METHODS and METHODS.entry(name).info.get("source_rules") is not None}


def config_fit_images(config_file) -> ImageRecords:
    """The annotated training images a landmark method's config trained on (its ``data.sources``, data seed and the
    trainer's subset rule), so that the regression is fitted on exactly those (the JLAD rows of docs/BENCHMARKS.md)."""
    config = load_config_file(config_file)
    fittable = fit_config_rules()
    rules = fittable.get(config.get("method"))
    if rules is None:
        raise CorrmarkError(f"--fit-config takes a {' or '.join(fittable)} config; {config_file} trains "
                            f"{config.get('method')!r}")
    data = config.get("data") or {}
    sources = data.get("sources") or []
    images = collect_source_images(sources, int(data.get("data_seed", 0)), rules)
    datasets = [open_image_dataset(source["dataset"], os.path.expandvars(str(source["root"])), source.get("split"),
                                   load_images=False) for source in sources]
    return images_at([image.path for image in images], datasets, name=f"training images of {config_file}")


def _write_landmark_result(args, result: dict) -> None:
    """``--json``: the record with the model's description and checkpoint as ``model``."""
    model = dict(result.pop("model"), checkpoint=args.checkpoint)
    protocol = result.pop("protocol")
    result.pop("machine", None)
    write_result(args, result, protocol=protocol, model=model, config=args.fit_config)


def _equivariance_of_folder(args) -> int:
    """``eval-landmarks folder``: images without annotations -> the label-free equivariance error."""
    if not args.root:
        raise CorrmarkError("eval-landmarks folder needs --root (the image folder)")
    folder = open_image_dataset("image-folder", args.root, load_images=False)
    paths = [str(folder[index]["path"]) for index in range(len(folder))][:args.test_limit]
    return _equivariance(args, paths)


def _equivariance_of_test_split(args) -> int:
    """``eval-landmarks cub`` / ``mtfl --equivariance``: the equivariance error on seeded test images (CUB test
    birds, AFLW faces): the equivariance rows of docs/BENCHMARKS.md."""
    if args.dataset not in EQUIVARIANCE_DATASETS:
        raise CorrmarkError(f"--equivariance works on {' and '.join(EQUIVARIANCE_DATASETS)}, not {args.dataset}")
    if not args.root:
        raise CorrmarkError(f"eval-landmarks {args.dataset} needs --root (the dataset folder)")
    images = open_image_dataset(EQUIVARIANCE_DATASETS[args.dataset], args.root, "test", load_images=False)
    return _equivariance(args, equivariance_images(images, args.test_limit))


def _equivariance(args, paths: list[str]) -> int:
    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    result = landmark_equivariance(model, paths, progress=not args.quiet)
    print(f"{args.dataset}: equivariance error {result['mean_error']:.2f}% of the image side (median "
          f"{result['median_error']:.2f}%, {len(paths)} images; points at fixed positions score about 7%)")
    result["dataset"] = f"{args.dataset} ({len(paths)} images)"
    _write_landmark_result(args, result)
    return 0


def add_landmarks_parser(commands) -> None:
    landmarks = commands.add_parser("landmarks", help="detect, draw and export landmarks (JSON) on images")
    landmarks.add_argument("images", nargs="+")
    landmarks.add_argument("--checkpoint", required=True)
    landmarks.add_argument("--model", default=None, help=model_help())
    landmarks.add_argument("--out", required=True)
    landmarks.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_option(landmarks)
    landmarks.set_defaults(handler=run_landmarks)


def run_landmarks(args) -> int:
    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    written = export_landmarks(model, args.images, args.out, progress=not args.quiet)
    print(f"landmarks of {len(args.images)} images: {written['json']}")
    return 0


def landmark_model_name(args) -> str:
    """--model, else the method the checkpoint was trained with (``config.method``) when it is a landmark model, else
    ``DEFAULT_LANDMARK_MODEL``."""
    if args.model is not None:
        return args.model
    method = (read_checkpoint(args.checkpoint).get("config") or {}).get("method")
    return method if method in LANDMARK_MODELS else DEFAULT_LANDMARK_MODEL
