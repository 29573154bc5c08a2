"""Commands over landmark models: ``eval-landmarks`` (the regression protocol, or equivariance on a bare folder) and
``landmarks`` (detect, draw and export)."""

from __future__ import annotations

from ..errors import CorrmarkError
from .options import add_device_option, command_line, given, write_result

MODEL_HELP = "landmark model: jlad or c3 (default: the checkpoint's method, else jlad)"


def add_eval_landmarks_parser(commands) -> None:
    from ..eval.landmarks import BENCHMARK_PROTOCOLS

    length = {name: protocol["normalisation"] for name, protocol in BENCHMARK_PROTOCOLS.items()}
    landmark_eval = commands.add_parser("eval-landmarks", help="landmark error: linear regression to annotations")
    landmark_eval.add_argument("dataset", choices=["mtfl", "pf-willow", "coco", "folder"],
                               help=f"mtfl: train -> AFLW test, {length['mtfl']}; pf-willow: image split, "
                                    f"{length['pf-willow']}; coco: your own images, --fit and --test COCO keypoints "
                                    f"files, {length['coco']}; folder: images of --root without annotations, "
                                    f"equivariance under known warps")
    landmark_eval.add_argument("--root", default=None,
                               help="dataset folder (mtfl, pf-willow); for coco the image folder (default: each "
                                    "JSON file's folder)")
    landmark_eval.add_argument("--fit", default=None, help="coco: annotations the regression is fitted on")
    landmark_eval.add_argument("--test", default=None, help="coco: annotations the error is measured on")
    landmark_eval.add_argument("--normalisation", choices=["inter-ocular", "kp-bbox"], default=None,
                               help=f"error length (default: {length['mtfl']} for mtfl, {length['coco']} otherwise)")
    landmark_eval.add_argument("--eyes", default=None, help="inter-ocular: indices of the two eye keypoints")
    landmark_eval.add_argument("--checkpoint", required=True)
    landmark_eval.add_argument("--model", default=None, help=MODEL_HELP)
    landmark_eval.add_argument("--train-limit", type=int, default=None, help="fit the regression on N training images")
    landmark_eval.add_argument("--test-limit", type=int, default=None)
    landmark_eval.add_argument("--figure", default=None, help="PNG of discovered landmarks on test images")
    landmark_eval.add_argument("--json", default=None)
    add_device_option(landmark_eval)
    landmark_eval.add_argument("--quiet", action="store_true")
    landmark_eval.set_defaults(handler=run_eval_landmarks)


def run_eval_landmarks(args) -> int:
    from .. import load_landmark_model
    from ..data import open_image_dataset
    from ..eval.landmark_images import coco_landmark_images, pfwillow_landmark_images
    from ..eval.landmarks import BENCHMARK_PROTOCOLS, evaluate_landmarks

    if args.dataset == "folder":
        return _equivariance_of_folder(args)
    if args.dataset == "coco":
        if not (args.fit and args.test):
            raise CorrmarkError("eval-landmarks coco needs --fit FIT.json and --test TEST.json (COCO keypoints)")
        train, test = coco_landmark_images(args.fit, args.root), coco_landmark_images(args.test, args.root)
    elif not args.root:
        raise CorrmarkError(f"eval-landmarks {args.dataset} needs --root (the dataset folder)")
    elif args.dataset == "mtfl":
        train, test = (open_image_dataset("mtfl", args.root, split) for split in ("train", "test"))
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
    result["command"] = command_line(args)
    print(f"{args.dataset}: mean error {result['mean_error']:.2f}% of the {normalisation} length")
    write_result(args, result)
    return 0


def _equivariance_of_folder(args) -> int:
    """``eval-landmarks folder``: images without annotations -> the label-free equivariance error."""
    from .. import load_landmark_model
    from ..data import open_image_dataset
    from ..eval.landmarks import landmark_equivariance

    if not args.root:
        raise CorrmarkError("eval-landmarks folder needs --root (the image folder)")
    folder = open_image_dataset("image-folder", args.root, load_images=False)
    paths = [str(folder[index]["path"]) for index in range(len(folder))][:args.test_limit]
    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    result = landmark_equivariance(model, paths, progress=not args.quiet)
    result["command"] = command_line(args)
    print(f"folder: equivariance error {result['mean_error']:.2f}% of the image side (median "
          f"{result['median_error']:.2f}%, {len(paths)} images; points at fixed positions score about 7%)")
    write_result(args, result)
    return 0


def add_landmarks_parser(commands) -> None:
    landmarks = commands.add_parser("landmarks", help="detect, draw and export landmarks (JSON) on images")
    landmarks.add_argument("images", nargs="+")
    landmarks.add_argument("--checkpoint", required=True)
    landmarks.add_argument("--model", default=None, help=MODEL_HELP)
    landmarks.add_argument("--out", required=True)
    landmarks.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_option(landmarks)
    landmarks.set_defaults(handler=run_landmarks)


def run_landmarks(args) -> int:
    from .. import load_landmark_model
    from ..eval.landmark_detection import export_landmarks

    model = load_landmark_model(landmark_model_name(args), checkpoint=args.checkpoint, device=args.device)
    written = export_landmarks(model, args.images, args.out, progress=not args.quiet)
    print(f"landmarks of {len(args.images)} images: {written['json']}")
    return 0


def parse_eyes(text: str | None) -> tuple[int, int] | None:
    """``"0,1"`` -> ``(0, 1)``: the two eye keypoints of the inter-ocular length (None: not given)."""
    if text is None:
        return None
    try:
        first, second = (int(part) for part in text.split(","))
    except ValueError:
        raise CorrmarkError(f"--eyes takes two keypoint indices like 0,1, got {text!r}") from None
    return first, second


def landmark_model_name(args) -> str:
    """--model, else the method the checkpoint was trained with (``config.method``: jlad or c3), else jlad."""
    if args.model is not None:
        return args.model
    from ..models import LANDMARK_MODELS
    from ..train.checkpoint import read_checkpoint

    method = (read_checkpoint(args.checkpoint).get("config") or {}).get("method")
    return method if method in LANDMARK_MODELS else "jlad"
