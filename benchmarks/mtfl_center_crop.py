"""Write an MTFL copy whose training faces keep the centred fraction of each side (the AFLW test split is linked).

MTFL's training images are loose crops (median inter-ocular distance 17 % of the width for LFW, 22 % for the web
images) while the AFLW test faces are tight (30 %). With ``--fraction 0.65`` the two training sources land at 26 % and
34 %, around AFLW's framing, and the face covers more cells of a frozen feature grid. One fixed crop for every image:
no landmark is looked at per image (the landmarks are only shifted into the crop, for the evaluator's regression).

    PYTHONPATH=src python benchmarks/mtfl_center_crop.py --root ../shared/data/mtfl --out runs/data/mtfl_center65
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corrmark.data.images import write_center_cropped_mtfl  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the MTFL folder (training.txt, testing.txt, images)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--fraction", type=float, default=0.65)
    args = parser.parse_args(argv)
    print(write_center_cropped_mtfl(args.root, args.out, args.fraction))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
