"""Headless matplotlib figures written atomically: the result plots of `cp-dist reproduce` and the benchmarks."""

from __future__ import annotations

from pathlib import Path


def new_figure(width: float = 8, height: float = 5, columns: int = 1):
    """A headless matplotlib figure and its axis (or `columns` axes side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width, height))


def save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    staging = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(staging, dpi=120)
    staging.replace(path)
    plt.close(figure)
