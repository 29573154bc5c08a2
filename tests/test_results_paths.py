"""Every ``benchmarks/results/...`` path the repository mentions exists: docs, README, the zoo index, configs,
benchmark scripts, sources and tests (results live in ``benchmarks/results/<method>/``)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MENTION = re.compile(r"benchmarks/results(?:/[A-Za-z0-9_.*{},<>$\-]+)*/?")
PLACEHOLDER = re.compile(r"[<>${]")  # <row>, ${RUN}, $name: filled in by the reader or the shell
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def mentioning_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "zoo" / "zoo.yaml", *(REPO / "docs").glob("*.md")]
    files += [*(REPO / "benchmarks").glob("*.py"), *(REPO / "benchmarks").glob("*.sh"), *(REPO / "tests").glob("*.py")]
    files += [*(REPO / "configs").rglob("*.yaml"), *(REPO / "src").rglob("*.py")]
    return [path for path in files if path.is_file() and path != Path(__file__).resolve()]


def mentions(text: str) -> set[str]:
    return {match.group(0).rstrip(".,;:") for match in MENTION.finditer(text)}


def resolves(mention: str) -> bool:
    """A file or folder; a glob (``*``, ``{a,b}``) with a match; a command's figure stem (a script writes
    ``STEM_<label>.<ext>`` per checkpoint) or a shell prefix (``OUT=.../scorrsan_stanfordextra_lobo``) that names
    existing files."""
    alternatives = _expand_braces(mention)
    if len(alternatives) > 1:
        return all(resolves(alternative) for alternative in alternatives)
    path = REPO / mention
    if path.exists() or ("*" in mention and any(REPO.glob(mention))):
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return any(candidate.suffix.lower() in IMAGE_SUFFIXES for candidate in path.parent.glob(f"{path.stem}*"))
    return not path.suffix and any(path.parent.glob(f"{path.name}*"))


def _expand_braces(mention: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", mention)
    if match is None:
        return [mention]
    return [expanded for option in match.group(1).split(",")
            for expanded in _expand_braces(mention[:match.start()] + option + mention[match.end():])]


def test_every_mentioned_result_path_exists():
    missing = []
    for path in mentioning_files():
        for mention in mentions(path.read_text(errors="replace")):
            if PLACEHOLDER.search(mention) or mention.rstrip("/") == "benchmarks/results":
                continue
            if not resolves(mention):
                missing.append(f"{path.relative_to(REPO)}: {mention}")
    assert not missing, "mentioned but missing:\n" + "\n".join(sorted(missing))


def test_the_checker_sees_a_missing_path():
    assert mentions("see `benchmarks/results/jlad/nope.json`.") == {"benchmarks/results/jlad/nope.json"}
    assert not resolves("benchmarks/results/jlad/nope.json")
    assert resolves("benchmarks/results/jlad")
    assert resolves("benchmarks/results/zero_shot/pf_willow_best_{s2t,t2s}.json")
    assert not resolves("benchmarks/results/zero_shot/pf_willow_best_{s2t,nope}.json")
    assert not resolves("benchmarks/results/jlad/nope_*.json")


def test_results_are_grouped_by_method():
    folders = {path.name for path in RESULTS.iterdir() if path.is_dir()}
    assert {"sfnet", "scorrsan", "jlad", "c3", "zero_shot", "propagate", "speed"} <= folders
    assert (RESULTS / "jlad" / "jlad_mtfl_k10.json").is_file() and (RESULTS / "c3" / "c3_mtfl_k10.json").is_file()
