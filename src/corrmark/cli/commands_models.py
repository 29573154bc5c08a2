"""Commands that make or show models: ``train``, ``export`` (weights only), ``zoo`` (the model index) and ``demo``
(the showcase report)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..demo import run_demo
from ..train import DistributedSetup, load_config, run_config, seeded_config
from ..train.export import export_weights, file_sha256
from ..zoo import check_zoo_entry, list_zoo, zoo_dir
from .options import add_device_option, add_precision_option, given, library_default


def add_train_parser(commands) -> None:
    train = commands.add_parser("train", help="train a method from an experiment config (configs/*.yaml)")
    train.add_argument("config", help="experiment YAML with a 'method:' key")
    train.add_argument("--out", default=None, help="output folder (default: the config's 'output', else runs/<name>)")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value (YAML), e.g. --set train.steps=50 --set data.limit=100; the run "
                            "is then named after the overrides (runs/<name>__<overrides>)")
    add_device_option(train)
    add_precision_option(train, "fp32, bf16 or fp16: the precision of each step's forward and loss (autocast); sets "
                                "train.precision (default: the config's, else fp32) and, like --set, names the run "
                                "after it")
    train.add_argument("--quiet", action="store_true")
    train.add_argument("--seed", type=int, default=None,
                       help="override the config's seed; the default output folder gets a _seed<N> suffix")
    train.set_defaults(handler=run_train)


def run_train(args) -> int:
    overrides = [*(args.set or ()), *([f"train.precision={args.precision}"] if args.precision else [])]
    config, out_dir = load_config(args.config, overrides), args.out
    if args.seed is not None:  # a repeat of the experiment with another seed, in its own folder
        config = seeded_config(config, args.seed)
        out_dir = out_dir or config["output"]
    final = run_config(config, out_dir=out_dir, resume=args.resume, device=args.device, progress=not args.quiet)
    setup = DistributedSetup.from_environment()
    if setup is None or setup.is_main:  # under torchrun one line, not one per process
        print(f"final checkpoint: {final}")
    return 0


def add_demo_parser(commands) -> None:
    demo = commands.add_parser("demo", help="zero-shot and trained matchers on the bundled pairs: an HTML report")
    demo.add_argument("--out", default=None,
                      help=f"output folder (default: {library_default(run_demo, 'out_dir')})")
    demo.add_argument("--pairs", type=int, default=None, help="use the first N bundled pairs only")
    demo.add_argument("--matchers", nargs="+", default=None,
                      help="run only these: zero-shot 'dinov2-block8', 'best', and/or zoo model names")
    demo.add_argument("--no-trained", action="store_true", help="zero-shot matchers only (no model zoo weights)")
    add_device_option(demo)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(handler=run_demo_command)


def run_demo_command(args) -> int:
    report = run_demo(device=args.device, progress=not args.quiet, pairs=args.pairs, matchers=args.matchers,
                      trained=not args.no_trained, **given(out_dir=args.out))
    print(f"demo report: {report.resolve()}")
    return 0


def add_export_parser(commands) -> None:
    export = commands.add_parser("export", help="weights-only copy of a training checkpoint (for the model zoo)")
    export.add_argument("checkpoint", help="training checkpoint, e.g. runs/NAME/final.pt")
    export.add_argument("out", help="file to write, e.g. zoo/NAME.pt")
    export.set_defaults(handler=run_export)


def run_export(args) -> int:
    written = export_weights(args.checkpoint, args.out)
    print(f"weights-only export: {written} ({written.stat().st_size / 1e6:.1f} MB, sha256 {file_sha256(written)})")
    return 0


def add_zoo_parser(commands) -> None:
    zoo = commands.add_parser("zoo", help="list the model zoo (zoo/zoo.yaml) and which weights files are present")
    zoo.add_argument("--folder", default=None, help="zoo folder (default: $CORRMARK_ZOO, else zoo/ of the checkout)")
    zoo.add_argument("--check", action="store_true", help="also load every present model through its loader")
    zoo.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_option(zoo)
    zoo.set_defaults(handler=run_zoo)


def run_zoo(args) -> int:
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
