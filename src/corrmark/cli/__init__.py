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

Each command is a parser and a handler in ``commands_matching`` (eval, match, propagate, bench),
``commands_landmarks`` (eval-landmarks, landmarks) or ``commands_models`` (train, demo, export, zoo); ``options``
holds what they share. Defaults of protocols and settings live in the library: an option left out is not passed,
and help texts quote the library's values.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..device import resolve_device
from ..errors import CorrmarkError
from . import commands_landmarks, commands_matching, commands_models
from .options import matcher_from_args, matcher_options, parse_layers

__all__ = ["build_parser", "main", "matcher_from_args", "matcher_options", "parse_layers"]

# In the order ``corrmark --help`` lists them.
COMMANDS = (commands_matching.add_eval_parser, commands_matching.add_match_parser, commands_models.add_train_parser,
            commands_landmarks.add_eval_landmarks_parser, commands_landmarks.add_landmarks_parser,
            commands_models.add_demo_parser, commands_models.add_export_parser, commands_models.add_zoo_parser,
            commands_matching.add_propagate_parser, commands_matching.add_bench_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corrmark", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"corrmark {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS:
        add_parser(commands)
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
