"""The Ray engine's parts that need no cluster: the cut-point search and the refusals. The engine
itself runs for real in tests/jobs/test_ray_jobs.py (a loopback Ray cluster), against the local engine."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import ray

from cp_dist.data.prepare import PrepareOptions
from cp_dist.data.prepare_ray import count_in_bins, locate, prepare_with_ray
from cp_dist.errors import UserError


@pytest.mark.parametrize("spread", [5, 10_000, 2_000_000_000])
def test_locate_finds_the_key_of_every_rank_in_stable_time_order(spread: int) -> None:
    """Histogram refinement over (timestamp, line) agrees with a stable sort, heavy ties included."""
    rng = np.random.default_rng(spread)
    timestamps = rng.integers(1_000_000_000, 1_000_000_000 + spread, size=3000)
    lines = rng.permutation(np.arange(1, 5001))[:3000]
    order = np.lexsort((lines, timestamps))

    for rank in (0, 1, 1499, 2400, 2999):
        timestamp, below = locate(rank, int(timestamps.min()), int(timestamps.max()), partial(count_in_bins, timestamps))
        tied = lines[timestamps == timestamp]
        line, _ = locate(rank - below, int(lines.min()), int(lines.max()), partial(count_in_bins, tied))
        assert (timestamp, line) == (timestamps[order[rank]], lines[order[rank]])
        assert below == (timestamps < timestamp).sum()


@pytest.mark.parametrize(("dataset", "options", "expected"), [
    ("goodreads", PrepareOptions(split="random"), "splits by time only"),
    ("bookcrossing", PrepareOptions(), "splits by time only"),
    ("goodreads", PrepareOptions(ratios=(0.5, 0.6, 0.1)), "--ratios"),
])
def test_what_the_ray_engine_cannot_do_is_refused_before_a_cluster_starts(
    tmp_path: Path, dataset: str, options: PrepareOptions, expected: str
) -> None:
    with pytest.raises(UserError, match=expected):
        prepare_with_ray(dataset, tmp_path, tmp_path / "out", options)
    assert not ray.is_initialized()
