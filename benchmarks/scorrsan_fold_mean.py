"""Mean over the leave-one-breed-out folds of ``scorrsan_eval.py --protocol stanfordextra`` rows (or of
``corrmark eval stanfordextra --breeds BREED --direction t2s --threshold kp-bbox --json`` rows); one JSON.

    PYTHONPATH=src python benchmarks/scorrsan_fold_mean.py \
        --json benchmarks/results/scorrsan/scorrsan_stanfordextra_lobo_mean_baseline.json \
        benchmarks/results/scorrsan/scorrsan_stanfordextra_lobo_*_baseline.json

``metrics["kp-bbox"]``: ``pck`` = the fold mean (every held-out breed counts once), ``pairs_weighted`` = the mean
over all test pairs of all folds (folds weighted by their pair counts; the pairs are per-pair PCK values, so this is
the per-pair average of the union), ``folds`` = each fold's breed, pairs and PCK. ``seconds`` is this script's own
time; ``fold_seconds`` sums the folds' evaluation times and ``train_seconds`` their training times (when trained).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scorrsan_eval import write_result

from corrmark.errors import CorrmarkError


def read_folds(paths) -> list[dict]:
    """The fold rows, checked: all stanfordextra, each held-out breed once."""
    rows = [as_fold_row(json.loads(Path(path).read_text())) | {"file": Path(path).name} for path in paths]
    for row in rows:
        if row["protocol"].get("name") != "stanfordextra":
            raise CorrmarkError(f"{row['file']} is not a stanfordextra leave-one-breed-out row")
    breeds = [row["protocol"]["held_out_breed"] for row in rows]
    if len(set(breeds)) != len(breeds):
        raise CorrmarkError(f"a held-out breed appears twice among the folds: {', '.join(breeds)}")
    return rows


def as_fold_row(row: dict) -> dict:
    """A ``corrmark eval stanfordextra --breeds BREED --json`` record (metrics at the top level) in the layout of a
    scorrsan_eval.py row; a scorrsan_eval.py row as it is."""
    if "metrics" in row:
        return row
    breeds = ((row.get("experiment") or {}).get("dataset_options") or {}).get("breeds") or []
    if row.get("dataset") != "stanfordextra" or len(breeds) != 1:
        raise CorrmarkError("a fold row of `corrmark eval` must be stanfordextra with one --breeds breed")
    return {"protocol": dict(row["protocol"], name="stanfordextra", held_out_breed=breeds[0]),
            "metrics": {"kp-bbox": row}, "evaluated": {"matcher": row.get("matcher"), "path": "matcher"},
            "model": row.get("model"), "config": None, "seconds": row["seconds"]}


def fold_summary(row: dict) -> dict:
    block = row["metrics"]["kp-bbox"]
    return {"held_out_breed": row["protocol"]["held_out_breed"], "pairs": block["pairs"],
            "keypoints": block["keypoints"], "pck": block["pck"], "json": row["file"]}


def mean_metrics(folds: list[dict]) -> dict:
    keys = list(folds[0]["pck"])
    pairs = np.asarray([fold["pairs"] for fold in folds], dtype=np.float64)
    values = {key: np.asarray([fold["pck"][key] for fold in folds]) for key in keys}
    return {"pck": {key: float(values[key].mean()) for key in keys},
            "pairs_weighted": {key: float((values[key] * pairs).sum() / pairs.sum()) for key in keys},
            "pairs": int(pairs.sum()), "keypoints": int(sum(fold["keypoints"] for fold in folds)),
            "folds": folds}


def train_seconds(rows: list[dict]) -> float | None:
    seconds = [((row.get("evaluated") or {}).get("train_metrics") or {}).get("train_seconds") for row in rows]
    return None if None in seconds else round(float(sum(seconds)), 1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folds", nargs="+", help="scorrsan_eval.py JSONs, one per fold")
    parser.add_argument("--label", default=None)
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = read_folds(args.folds)
    metrics = {"kp-bbox": mean_metrics([fold_summary(row) for row in rows]),
               "fold_seconds": round(sum(row["seconds"] for row in rows), 1), "train_seconds": train_seconds(rows)}
    protocol = dict(rows[0]["protocol"], held_out_breed=[row["protocol"]["held_out_breed"] for row in rows],
                    fold_averaging="pck = mean over folds; pairs_weighted = mean over all test pairs")
    evaluated = {"folds": [dict(row["evaluated"], json=row["file"]) for row in rows]}
    model = {"folds": [row.get("model") for row in rows]}  # None for rows written before records named their model
    configs = [row["config"] for row in rows if row.get("config") is not None]
    return write_result(args.json, args.label, argv, protocol, model, evaluated,
                        {"folds": configs} if configs else None, metrics, time.perf_counter() - started)


if __name__ == "__main__":
    main()
