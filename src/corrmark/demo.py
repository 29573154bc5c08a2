"""``corrmark demo``: the showcase. Zero-shot and trained (model zoo) matchers side by side on the bundled example
pairs, discovered landmarks where a zoo landmark model fits the bundled images, and the zoo's benchmark numbers; no
network and no dataset needed. Writes one HTML report (``index.html``) beside its pictures.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .bundled import bundled_dir
from .errors import CorrmarkError, DatasetError, UnknownNameError
from .eval.landmark_detection import detect_landmarks
from .eval.pck import pck_per_pair, threshold_length
from .io import read_image
from .models import load_matcher
from .viz import Report, blend, colour, draw_matches, draw_points, line_plot_svg, save_image, warp_image, with_legend
from .zoo import list_zoo, load_zoo_landmarks, load_zoo_matcher

# Zero-shot matchers the demo shows: key (for --matchers) -> (label, load_matcher("nn", ...) options).
ZERO_SHOT = {
    "dinov2-block8": ("zero-shot: DINOv2-S block 8, nearest neighbour", {"preset": "dinov2-block8"}),
    "best": ("zero-shot best: DINOv2 + EfficientNet, mutual NN, soft argmax", {"preset": "best"}),
}
ALPHA = 0.1
FIGURE_GAP = 6  # pixels between the match drawing and the warp row of one figure


@dataclass
class DemoMatcher:
    key: str
    label: str
    kind: str  # "zero-shot" | "trained"
    build: Callable
    entry: object = None  # the ZooEntry of a trained matcher


@dataclass
class MatcherRun:
    matcher: DemoMatcher
    description: dict
    load_seconds: float
    scores: list = field(default_factory=list)  # per pair: (PCK, correct, total)
    errors: list = field(default_factory=list)  # per pair: keypoint errors / the pair's kp-bbox length
    seconds: list = field(default_factory=list)
    figures: list = field(default_factory=list)  # per pair: path relative to the report


def examples_dir() -> Path:
    """The bundled examples: $CORRMARK_EXAMPLES, else ``examples/`` of the source checkout, else the installed
    package's copy (``corrmark.bundled``)."""
    try:
        return bundled_dir("examples", "pairs.json", "CORRMARK_EXAMPLES")
    except CorrmarkError as error:
        raise DatasetError(str(error)) from None


def run_demo(out_dir: str | os.PathLike = "corrmark-demo", device="cpu", progress: bool = True,
             pairs: int | None = None, matchers: list[str] | None = None, trained: bool = True) -> Path:
    """Write the showcase report; returns the path of ``index.html``.

    ``pairs``: use the first N bundled pairs. ``matchers``: names to run (zero-shot keys of ``ZERO_SHOT`` and/or zoo
    model names), default every zero-shot matcher plus, with ``trained``, every zoo matcher whose weights are present;
    ``trained=False`` also leaves out the zoo's landmark models. Zoo models that are missing or fail to load are skipped
    with a note in the report.
    """
    out_dir = Path(out_dir)
    examples = examples_dir()
    document = json.loads((examples / "pairs.json").read_text())
    chosen = _first_pairs(document["pairs"], pairs)
    notes: list[str] = []
    entries = _zoo_entries(notes)
    runs = [run for candidate in _candidates(matchers, trained, entries, notes)
            if (run := _run_matcher(candidate, chosen, examples, out_dir, device, progress, notes)) is not None]
    if not trained:
        notes.append("Trained models (model zoo matchers and landmark models) left out on request (--no-trained).")
    landmark_figures = _landmark_figures(entries, document, examples, out_dir, device, notes) if trained else []
    return _write_report(out_dir, runs, chosen, entries, landmark_figures, notes)


# --- which matchers ---------------------------------------------------------------------------------------------------


def _first_pairs(all_pairs: list, limit: int | None) -> list:
    if limit is not None and limit < 1:
        raise CorrmarkError(f"--pairs takes a positive number, got {limit}")
    return all_pairs[:limit] if limit else all_pairs


def _zoo_entries(notes: list) -> list:
    try:
        return list_zoo()
    except CorrmarkError as error:  # no zoo is a normal state of a fresh install: show zero-shot only
        notes.append(f"No trained models shown: {error}")
        return []


def _candidates(names: list[str] | None, trained: bool, entries: list, notes: list) -> list[DemoMatcher]:
    by_name = {entry.name: entry for entry in entries}
    if names is None:
        names = list(ZERO_SHOT) + ([entry.name for entry in entries if entry.kind == "matcher"] if trained else [])
    candidates = []
    for name in names:
        if name in ZERO_SHOT:
            label, options = ZERO_SHOT[name]
            candidates.append(DemoMatcher(name, label, "zero-shot", _zero_shot_builder(options)))
        elif name in by_name:
            candidate = _trained_candidate(by_name[name], notes)
            candidates.extend([candidate] if candidate else [])
        else:
            raise UnknownNameError(f"unknown demo matcher '{name}'; choose from {', '.join([*ZERO_SHOT, *by_name])}")
    return candidates


def _zero_shot_builder(options: dict) -> Callable:
    def build(device):
        return load_matcher("nn", device=device, **options)

    return build


def _trained_candidate(entry, notes: list) -> DemoMatcher | None:
    if not entry.available:
        notes.append(f"Skipped trained matcher {entry.name}: its weights file {entry.file} is not in the zoo folder "
                     f"(docs/MODEL_ZOO.md says how to get or export it).")
        return None

    def build(device):
        return load_zoo_matcher(entry.name, device=device)

    return DemoMatcher(entry.name, f"trained: {entry.name} ({entry.method})", "trained", build, entry)


# --- matching the pairs ---------------------------------------------------------------------------------------------


def _run_matcher(candidate: DemoMatcher, pairs: list, examples: Path, out_dir: Path, device, progress,
                 notes: list) -> MatcherRun | None:
    started = time.perf_counter()
    try:
        matcher = candidate.build(device)
    except CorrmarkError as error:  # e.g. a zoo file from another corrmark version: show the rest
        notes.append(f"Skipped {candidate.key}: it could not be loaded ({error}).")
        return None
    run = MatcherRun(candidate, matcher.describe(), time.perf_counter() - started)
    for index, pair in enumerate(tqdm(pairs, desc=candidate.key, disable=not progress, unit="pair")):
        name = f"p{index}_{_slug(candidate.key)}.jpg"
        score, errors, seconds = _match_pair(matcher, pair, examples, out_dir / name)
        run.scores.append(score)
        run.errors.append(errors)
        run.seconds.append(seconds)
        run.figures.append(name)
    return run


def _match_pair(matcher, pair: dict, examples: Path, figure_path: Path) -> tuple[tuple, np.ndarray, float]:
    """Transfer the pair's keypoints and warp its source; draws one figure; returns ((PCK, correct, total),
    normalised errors, seconds)."""
    source, target = read_image(examples / pair["source"]), read_image(examples / pair["target"])
    source_points = np.asarray(pair["source_points"], dtype=float)
    target_points = np.asarray(pair["target_points"], dtype=float)
    started = time.perf_counter()
    predicted = matcher.transfer_keypoints(source, target, source_points)
    mapping = matcher.estimate_mapping(source, target)
    seconds = time.perf_counter() - started
    valid = np.ones(len(target_points), dtype=bool)
    length = threshold_length("kp-bbox", target.shape[:2], points=target_points, valid=valid)
    correct, total = pck_per_pair(predicted, target_points, valid, length, (ALPHA,))[ALPHA]
    matches = draw_matches(source, target, source_points, predicted, target_points)
    warped = warp_image(source, mapping)
    save_image(_stack(matches, np.concatenate([warped, blend(target, warped)], axis=1)), figure_path)
    errors = np.linalg.norm(predicted - target_points, axis=1) / length
    return (correct / max(total, 1), correct, total), errors, seconds


def _stack(top: Image.Image, bottom: np.ndarray) -> Image.Image:
    """``top`` above ``bottom`` on a white canvas (the match drawing above the warp | blend row)."""
    bottom = Image.fromarray(bottom)
    canvas = Image.new("RGB", (max(top.width, bottom.width), top.height + FIGURE_GAP + bottom.height), (255, 255, 255))
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height + FIGURE_GAP))
    return canvas


def _slug(text: str) -> str:
    return "".join(character if character.isalnum() else "_" for character in text)


# --- landmarks ------------------------------------------------------------------------------------------------------


def _landmark_figures(entries: list, document: dict, examples: Path, out_dir: Path, device, notes: list) -> list:
    """Figures of each zoo landmark model on the bundled images of its category; a note where there are none."""
    figures = []
    for entry in (entry for entry in entries if entry.kind == "landmarks"):
        images = _images_of_category(document, entry.category)
        if not images:
            notes.append(f"Landmarks: {entry.name} ({entry.method}) was trained on {entry.category or 'other'} images "
                         f"and the bundled examples hold none (examples/README.md lists their sources and licences), "
                         f"so no landmarks are shown. On your own images: corrmark landmarks IMAGES... "
                         f"--checkpoint zoo/{entry.file} --out landmarks/")
        elif not entry.available:
            notes.append(f"Landmarks: skipped {entry.name}: its weights file {entry.file} is not in the zoo folder.")
        else:
            figures.extend(_draw_landmarks(entry, images, examples, out_dir, device, notes))
    return figures


def _images_of_category(document: dict, category: str | None) -> list[str]:
    """Bundled images of ``category``: pairs.json's optional ``images`` list, then the images of its pairs."""
    if not category:
        return []
    found = [item["image"] for item in document.get("images", []) if item.get("category") == category]
    for pair in document["pairs"]:
        if pair.get("category") == category:
            found.extend([pair["source"], pair["target"]])
    return list(dict.fromkeys(found))


def _draw_landmarks(entry, images: list[str], examples: Path, out_dir: Path, device, notes: list) -> list:
    try:
        model = load_zoo_landmarks(entry.name, device=device)
    except CorrmarkError as error:
        notes.append(f"Landmarks: skipped {entry.name}: it could not be loaded ({error}).")
        return []
    arrays = [read_image(examples / image) for image in images]
    points, _ = detect_landmarks(model, arrays)
    figures = []
    for index, (image, array, found) in enumerate(zip(images, arrays, points)):
        name = f"landmarks_{_slug(entry.name)}_{index}.jpg"
        picture = draw_points(array, found, labels=list(range(len(found))))
        save_image(with_legend(picture, [(colour(k), f"landmark {k}") for k in range(len(found))]), out_dir / name)
        figures.append((name, f"{entry.name}: {len(found)} landmarks on {Path(image).name}"))
    return figures


# --- the report -----------------------------------------------------------------------------------------------------


def _write_report(out_dir: Path, runs: list, pairs: list, entries: list, landmark_figures: list, notes: list) -> Path:
    report = Report("corrmark demo: zero-shot and trained matchers, side by side")
    report.paragraph(
        f"{len(pairs)} bundled pairs (examples/README.md gives their source and licence). PCK@{ALPHA}: share of "
        f"source keypoints transferred to within {ALPHA} x the size of the target's keypoint box (s2t). Each figure: "
        f"source and target with the transferred keypoints (lines; rings = ground truth), below it the source warped "
        f"onto the target and blended with it. Seconds per pair: keypoint transfer + dense mapping, on this machine.")
    report.legend([((230, 25, 75), "dot: a keypoint (its colour = its index; source left, prediction right)"),
                   (None, "coloured line: source keypoint -> predicted target point"),
                   (None, "ring: the true target point; white line: the error"),
                   (None, "bottom row: the source warped onto the target, then blended with it")],
                  title="How to read the figures")
    for note in notes:
        report.paragraph(note, note=True)
    _summary_table(report, runs, pairs)
    _pck_curve(report, runs)
    for index, pair in enumerate(pairs):
        _pair_section(report, runs, index, pair)
    report.heading("Discovered landmarks")
    if landmark_figures:
        report.figures(landmark_figures, columns=3)
    else:
        report.paragraph("No landmark figures: see the notes at the top.", note=True)
    _zoo_table(report, entries)
    report.heading("Matcher settings")
    for run in runs:
        report.paragraph(f"{run.matcher.key}: {json.dumps(run.description, default=str)}", note=True)
    return report.write(out_dir / "index.html")


def _pair_label(index: int, pair: dict) -> str:
    return f"{index + 1}: {pair['category']}"


def _summary_table(report: Report, runs: list, pairs: list) -> None:
    header = ["matcher", "kind", *[_pair_label(i, p) for i, p in enumerate(pairs)], f"mean PCK@{ALPHA}", "s/pair",
              "load s"]
    rows = [[run.matcher.label, run.matcher.kind, *[score for score, _, _ in run.scores],
             float(np.mean([score for score, _, _ in run.scores])), float(np.mean(run.seconds)), run.load_seconds]
            for run in runs]
    report.table(header, rows, caption=f"Summary: PCK@{ALPHA} per pair", table_id="summary")
    for run in runs:
        overlap = _training_overlap(run, pairs)
        if overlap:
            report.paragraph(f"{run.matcher.key} saw some of these images in training: {overlap}. Those scores are "
                             f"not test numbers.", note=True)


PLOT_ALPHAS = np.round(np.linspace(0.01, 0.25, 25), 3)


def _pck_curve(report: Report, runs: list) -> None:
    """PCK against alpha per matcher (pair-averaged, s2t, kp-bbox), as an inline plot."""
    if not runs:
        return
    series = {run.matcher.label: (PLOT_ALPHAS, [float(np.mean([np.mean(errors <= alpha) for errors in run.errors]))
                                                for alpha in PLOT_ALPHAS]) for run in runs}
    report.heading("PCK against the threshold")
    report.paragraph("Share of keypoints within alpha x the target keypoint box (s2t), averaged over the pairs above; "
                     "higher and further left is better.", note=True)
    report.svg(line_plot_svg(series, "alpha (fraction of the keypoint box)", "PCK"))


def _training_overlap(run: MatcherRun, pairs: list) -> str:
    seen = set(getattr(run.matcher.entry, "trained_on_examples", None) or [])
    parts = []
    for index, pair in enumerate(pairs):
        both = {pair["source"], pair["target"]} <= seen
        if both or {pair["source"], pair["target"]} & seen:
            parts.append(f"pair {_pair_label(index, pair)} ({'both images' if both else 'one image'})")
    return ", ".join(parts)


def _pair_section(report: Report, runs: list, index: int, pair: dict) -> None:
    report.heading(f"Pair {_pair_label(index, pair)}: {Path(pair['source']).stem} -> {Path(pair['target']).stem}")
    items = [(run.figures[index], f"{run.matcher.label}: PCK@{ALPHA} = {run.scores[index][0]:.2f} "
                                  f"({run.scores[index][1]}/{run.scores[index][2]})") for run in runs]
    report.figures(items, columns=min(len(items), 4) or None)


def _zoo_table(report: Report, entries: list) -> None:
    report.heading("Model zoo")
    if not entries:
        report.paragraph("No model zoo index found.", note=True)
        return
    report.table(["model", "method", "kind", "training data", "train minutes (2 CPU cores)", "weights"],
                 [[entry.name, entry.method, entry.kind, entry.data,
                   "" if entry.train_minutes is None else entry.train_minutes,
                   "present" if entry.available else "missing"] for entry in entries],
                 caption="Trained models (zoo.yaml; docs/MODEL_ZOO.md gives each command)", table_id="zoo")
    report.table(["model", "metric", "value"],
                 [[entry.name, metric, value] for entry in entries for metric, value in entry.metrics.items()],
                 caption="Measured numbers (on the full benchmarks, not on the pairs above)", table_id="zoo-metrics")
    for entry in entries:
        report.paragraph(f"{entry.name}: {entry.notes}", note=True)
