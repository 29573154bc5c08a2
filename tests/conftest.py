"""Shared fixtures: the location of ../shared/data (tests needing it skip when it is absent) and a matcher."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("CORRMARK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder, or skip the test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def nn_matcher():
    """The zero-shot DINOv2 block-8 matcher (built once: the ONNX conversion is cached after the first run)."""
    from corrmark import load_matcher

    return load_matcher("nn", preset="dinov2-block8-soft")
