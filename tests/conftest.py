"""Shared fixtures: real ML-100K (fetched once per machine) and synthetic raw files per format."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.data.fetch import cache_root, fetch_raw
from cp_dist.data.prepare import prepare
from cp_dist.data.synth import synth


@pytest.fixture(scope="session")
def ml100k_raw() -> Path:
    return fetch_raw("ml-100k", cache_root())


@pytest.fixture(scope="session")
def ml100k_prepared(ml100k_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml100k") / "prepared"
    prepare("ml-100k", ml100k_raw, out)
    return out


@pytest.fixture
def make_synth(tmp_path: Path):
    """make_synth(format, rows) -> raw directory with synthetic files and synth_truth.json."""

    def make(fmt: str, rows: int = 4000, seed: int = 0) -> Path:
        out = tmp_path / f"{fmt}-raw"
        synth(fmt, rows, out, seed=seed)
        return out

    return make
