"""Print the markdown rows of docs/BENCHMARKS.md from benchmarks/results/<method>/*.json (so the table never drifts).

    python benchmarks/make_table.py benchmarks/results/zero_shot/pf_willow_*.json
    python benchmarks/make_table.py benchmarks/results/speed/speed_memory.json   # or any `corrmark bench --json` file
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


def speed_rows(path: Path) -> None:
    """Rows of ``corrmark bench`` / benchmarks/speed_memory.py results (and of the older speed_memory format)."""
    print("| config | s/pair, keypoints | s/pair, dense mapping | peak RSS (MB) | torch threads |")
    print("|---|---|---|---|---|")
    for entry in json.loads(path.read_text())["rows"]:
        name = entry.get("matcher", entry.get("config"))
        if entry.get("image_size") is not None and "@" not in name:
            name = f"{name} @ {entry['image_size']}"
        dense = entry.get("seconds_per_pair_dense", entry.get("seconds_per_pair_dense_mapping"))
        threads = entry.get("threads", entry.get("torch_threads"))
        print(f"| {name} | {entry['seconds_per_pair_keypoints']:.3f} | {dense:.3f} | {entry['peak_rss_mb']:.0f} | "
              f"{threads} |")


def main() -> None:
    paths = [Path(argument) for argument in sys.argv[1:]]
    if paths and "rows" in json.loads(paths[0].read_text()):
        speed_rows(paths[0])
        return
    print("| config | direction | pairs | PCK@0.05 | PCK@0.1 | PCK@0.15 | s/pair (warm cache) | result |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        print(row(path))


if __name__ == "__main__":
    main()
