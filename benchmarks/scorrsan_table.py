"""Markdown rows of the SCorrSAN tables (docs/SCORRSAN.md) from benchmarks/results/scorrsan_*.json.

    python benchmarks/scorrsan_table.py benchmarks/results/scorrsan_faces_*.json
"""

import json
import sys
from pathlib import Path


def cells(block, keys=("0.05", "0.1", "0.15")):
    return [f"{block['pck'][key]:.3f}" if block and block["pck"].get(key) is not None else "-" for key in keys]


def row(path: Path) -> str:
    result = json.loads(path.read_text())
    metrics = result["metrics"]
    kp_box = metrics["kp-bbox"]
    out = [result["label"], str(kp_box["pairs"])]
    if "inter-ocular" in metrics:
        out += cells(metrics["inter-ocular"], ("0.05", "0.1"))
    out += cells(kp_box)
    steps = ((result.get("config") or {}).get("train") or {}).get("steps", "-")
    out += [str(steps), f"{result['seconds']:.0f}", f"`{path.name}`"]
    return "| " + " | ".join(out) + " |"


def main(paths):
    paths = [Path(p) for p in paths]
    faces = any("inter-ocular" in json.loads(p.read_text())["metrics"] for p in paths)
    header = ["row", "pairs"] + (["IO@0.05", "IO@0.1"] if faces else []) + ["kp@0.05", "kp@0.1", "kp@0.15"]
    header += ["train steps", "eval s", "json"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in paths:
        print(row(path))


if __name__ == "__main__":
    main(sys.argv[1:])
