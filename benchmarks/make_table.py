"""Print the markdown rows of docs/BENCHMARKS.md from benchmarks/results/*.json (so the table never drifts).

    python benchmarks/make_table.py benchmarks/results/pf_willow_*.json
"""

import json
import sys
from pathlib import Path


def row(path: Path) -> str:
    result = json.loads(path.read_text())
    protocol = result["protocol"]
    options = result["matcher"]
    name = Path(result.get("config") or path.stem).stem
    pck = result["pck"]
    cells = [name, protocol["direction"], str(result["pairs"])] + [f"{pck[key]:.3f}" for key in ("0.05", "0.1", "0.15")]
    cells += [f"{result['seconds_per_pair']:.3f}", f"`{path.name}`"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    print("| config | direction | pairs | PCK@0.05 | PCK@0.1 | PCK@0.15 | s/pair (warm cache) | result |")
    print("|---|---|---|---|---|---|---|---|")
    for argument in sys.argv[1:]:
        print(row(Path(argument)))


if __name__ == "__main__":
    main()
