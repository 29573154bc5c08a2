"""Train a SCorrSAN config (``corrmark train`` does the same) and, for MT, pick the better head on validation.

    PYTHONPATH=src python benchmarks/scorrsan_train.py configs/scorrsan_faces_mt.yaml [--set key.sub=value ...]

``--set`` overrides config values (YAML-parsed; ``corrmark.config.apply_overrides``), e.g.
``--set teacher_student.dilation=3 --set name=abl_d3``; the output is ``runs/<name>``. Prints the checkpoint to
evaluate (``selected.pt`` for MT, else ``final.pt``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from corrmark.train import load_config, run_config  # noqa: E402
from corrmark.train.scorrsan import select_mutual_head  # noqa: E402


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    final = run_config(config, resume=args.resume, progress=False)
    if (config.get("teacher_student") or {}).get("variant") == "mt":
        final = select_mutual_head(final)
    print(final)
    return final


if __name__ == "__main__":
    main()
