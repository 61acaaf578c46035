"""Helpers for tests that damage raw files on purpose."""

from __future__ import annotations

import gzip
from pathlib import Path


def insert_lines(path: Path, inserts: dict[int, str], encoding: str = "utf-8") -> None:
    """Puts each text at the given 1-based line number of a plain or gzip text file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        lines = handle.read().decode(encoding).splitlines()
    for number in sorted(inserts):
        lines.insert(number - 1, inserts[number])
    with opener(path, "wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode(encoding))
