"""What several commands share: the matcher options, the device and precision options, library defaults for help
texts, and how a result is recorded and written."""

from __future__ import annotations

import argparse
import inspect
import shlex

from ..device import AUTO, DEFAULT_PRECISION, PRECISIONS
from ..errors import CorrmarkError
from ..eval.records import record_result
from ..models import available_matchers, load_matcher
from ..models.zero_shot import NNMatcherConfig

DEFAULT_MATCHER = "nn"  # the zero-shot matcher: needs no weights

DEVICE_HELP = "auto (default: the first CUDA GPU when there is one, else cpu), cpu, cuda or cuda:N"


def add_device_option(parser) -> None:
    parser.add_argument("--device", default=AUTO, help=DEVICE_HELP)


PRECISION_HELP = (f"{DEFAULT_PRECISION} (default), bf16 or fp16: the precision of the matcher's backbone and learned "
                  f"layers (bf16 / fp16 run them under autocast, for speed on GPUs; docs/CONVENTIONS.md)")


def add_precision_option(parser, help_text: str = PRECISION_HELP) -> None:
    """``--precision``: None when not given (the library's default applies)."""
    parser.add_argument("--precision", choices=list(PRECISIONS), default=None, help=help_text)


def library_default(function, parameter: str):
    """The default of a library function's parameter: help texts quote it instead of repeating it."""
    return inspect.signature(function).parameters[parameter].default


def given(**values) -> dict:
    """The keyword arguments given on the command line (None = not given: the library's default applies)."""
    return {key: value for key, value in values.items() if value is not None}


def add_matcher_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("matcher")
    group.add_argument("--matcher", default=None,
                       help=f"matcher: {', '.join(available_matchers())} (default: {DEFAULT_MATCHER}, the zero-shot "
                            f"matcher)")
    group.add_argument("--checkpoint", default=None, help="trained weights for a trained matcher")
    group.add_argument("--preset", default=None,
                       help="named zero-shot settings for the nn matcher: dinov2-block8 or best (options below override)")
    group.add_argument("--backbone", default=None,
                       help="backbone name(s); fuse with '+', e.g. dinov2_vits14+efficientnet_lite0")
    group.add_argument("--layers", nargs="+", default=None,
                       help="layers per backbone, comma-separated within one backbone: '--layers 8,9 3'")
    group.add_argument("--image-size", type=int, default=None,
                       help=f"side of the square the images are resized to (default {NNMatcherConfig.image_size})")
    aspect = group.add_mutually_exclusive_group()
    aspect.add_argument("--square", action="store_true", help="resize to an IMAGE_SIZE square (the default)")
    aspect.add_argument("--keep-aspect", action="store_true",
                        help="keep the aspect ratio at the area of the IMAGE_SIZE square (never fewer cells)")
    group.add_argument("--mutual", action="store_true", help="soft mutual-nearest-neighbour filtering")
    group.add_argument("--flip", choices=["none", "auto"], default=None, help="match the mirrored target too")
    group.add_argument("--sigma", type=float, default=None, help="kernel soft-argmax window (cells); 0 = hard argmax")
    group.add_argument("--beta", type=float, default=None, help="soft-argmax temperature")
    add_device_option(group)
    add_precision_option(group)


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
        "precision": args.precision,
    }


def matcher_from_args(args):
    return load_matcher(args.matcher or DEFAULT_MATCHER, checkpoint=args.checkpoint, device=args.device,
                        **matcher_options(args))


def command_line(args) -> str:
    """The command that produced a result, recorded with it so every number names its source."""
    return "corrmark " + shlex.join(args.argv)


def write_result(args, metrics: dict, *, protocol, model, config=None, extra: dict | None = None) -> None:
    """``--json``: write the result record there (``corrmark.eval.records.record_result``, metrics at the top level,
    with this command line) and say so."""
    if args.json:
        record_result(args.json, metrics, protocol, model, command_line(args), config=config, extra=extra,
                      metrics_key=None)
        print(f"wrote {args.json}")


def parse_eyes(text: str | None) -> tuple[int, int] | None:
    """``"0,1"`` -> ``(0, 1)``: the two eye keypoints of the inter-ocular length (None: not given)."""
    if text is None:
        return None
    try:
        first, second = (int(part) for part in text.split(","))
    except ValueError:
        raise CorrmarkError(f"--eyes takes two keypoint indices like 0,1, got {text!r}") from None
    return first, second
