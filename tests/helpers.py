"""Test helpers: damaging raw files on purpose, training a stage into a run directory."""

from __future__ import annotations

import gzip
from pathlib import Path

from cp_dist.config import Config
from cp_dist.runs import RunDir
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train


def insert_lines(path: Path, inserts: dict[int, str], encoding: str = "utf-8") -> None:
    """Puts each text at the given 1-based line number of a plain or gzip text file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        lines = handle.read().decode(encoding).splitlines()
    for number in sorted(inserts):
        lines.insert(number - 1, inserts[number])
    with opener(path, "wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode(encoding))


def run(stage: str, data: Path, out: Path, config: Config, start: Path | None = None) -> dict:
    """Trains a stage into run directory `out` (from the run directory `start`'s checkpoint) and returns its metrics."""
    return train(StageJob(stage, data, out, config, init_from=RunDir(start).checkpoint if start else None))
