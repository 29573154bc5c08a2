"""Small CSV helpers (the standard library ``csv`` module; no pandas dependency)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DatasetError


def read_csv_rows(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Return (header, rows) of a CSV file; an empty or unreadable file raises ``DatasetError``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{what}: cannot read CSV file {path}: {error}") from None
    if not rows:
        raise DatasetError(f"{what}: CSV file is empty: {path}")
    header = [cell.strip() for cell in rows[0]]
    return header, rows[1:]


def require_columns(header: list[str], row: list[str], count: int, path: Path, line: int) -> None:
    """Raise ``DatasetError`` naming the file and line when a row has fewer than ``count`` cells."""
    if len(row) < count:
        raise DatasetError(f"{path} line {line}: expected at least {count} columns, got {len(row)}")
