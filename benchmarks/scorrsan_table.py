"""Markdown rows of the SCorrSAN tables (docs/SCORRSAN.md) from benchmarks/results/scorrsan/scorrsan_*.json.

    python benchmarks/scorrsan_table.py benchmarks/results/scorrsan/scorrsan_faces_*.json
"""

import json
import sys
from pathlib import Path


def cells(block, keys=("0.05", "0.1", "0.15")):
    return [f"{block['pck'][key]:.3f}" if block and block["pck"].get(key) is not None else "-" for key in keys]


def blocks(result: dict) -> tuple[dict, dict | None]:
    """(kp-bbox block, inter-ocular block or None) of a scorrsan_eval.py row or a `corrmark eval --json` row."""
    metrics = result.get("metrics")
    if isinstance(metrics, dict):
        return metrics["kp-bbox"], metrics.get("inter-ocular")
    return result, result.get("inter-ocular")  # corrmark eval: the kp-bbox PCK at the top level


def row(path: Path, faces: bool) -> str:
    result = json.loads(path.read_text())
    kp_box, interocular = blocks(result)
    out = [result.get("label", path.stem), str(kp_box["pairs"])]
    if faces:
        out += cells(interocular, ("0.05", "0.1"))
    out += cells(kp_box)
    config = result.get("config")
    steps = ((config if isinstance(config, dict) else {}).get("train") or {}).get("steps", "-")
    out += [str(steps), f"{result['seconds']:.0f}", f"`{path.name}`"]
    return "| " + " | ".join(out) + " |"


def main(paths):
    paths = [Path(p) for p in paths]
    faces = any(blocks(json.loads(p.read_text()))[1] is not None for p in paths)
    header = ["row", "pairs"] + (["IO@0.05", "IO@0.1"] if faces else []) + ["kp@0.05", "kp@0.1", "kp@0.15"]
    header += ["train steps", "eval s", "json"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in paths:
        print(row(path, faces))


if __name__ == "__main__":
    main(sys.argv[1:])
