"""What every benchmark writes beside its JSON result: a markdown summary and a PNG plot, atomically."""

from __future__ import annotations

from pathlib import Path

from cp_dist.io import atomic_file
from cp_dist.plots import new_figure, save_figure

__all__ = ["new_figure", "save_figure", "write_markdown"]


def write_markdown(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
