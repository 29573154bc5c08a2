"""Print the SFNet result JSONs (benchmarks/results/sfnet/sfnet_*.json) as markdown tables for docs.

    python benchmarks/sfnet_table.py
"""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "sfnet"


def main():
    pck_rows, mask_rows, other = [], [], []
    for path in sorted(RESULTS.glob("sfnet_*.json")):
        row = json.loads(path.read_text())
        metrics = row.get("metrics", row)  # `corrmark eval --json` files hold the metrics at the top level
        if "pck" in metrics:
            pck = metrics["pck"]
            pairs = row.get("protocol", {}).get("pairs", metrics.get("pairs"))
            pck_rows.append(f"| {path.stem} | {pck['0.05']:.3f} | {pck['0.1']:.3f} | {pck['0.15']:.3f} | {pairs} | "
                            f"{metrics.get('seconds_per_pair', '-')} |")
        elif "lt_acc" in metrics:
            mask_rows.append(f"| {path.stem} | {metrics['lt_acc']:.3f} | {metrics['iou']:.3f} | {metrics['pairs']} | "
                             f"{metrics.get('seconds_per_pair', '-')} |")
        else:
            other.append(path.stem)
    print("| result | PCK@0.05 | PCK@0.1 | PCK@0.15 | pairs | s/pair |\n|---|---|---|---|---|---|")
    print("\n".join(pck_rows))
    print("\n| result | LT-ACC | IoU | pairs | s/pair |\n|---|---|---|---|---|")
    print("\n".join(mask_rows))
    if other:
        print("\nother:", ", ".join(other))


if __name__ == "__main__":
    main()
