"""Resume points on a shared disk: a LATEST that names nothing, and a damaged file, are refused with
one line before a restart reads anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.errors import UserError
from cp_dist.io import digests
from cp_dist.training.resume import LocalResumeStore, write_manifest


def test_latest_names_a_missing_resume_point(tmp_path: Path) -> None:
    store = LocalResumeStore(tmp_path / "resume")
    with store.latest() as latest:
        assert latest is None, "no resume point: start from the beginning"
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "LATEST").write_text("step-00000002\n")
    with pytest.raises(UserError, match=r"LATEST: names step-00000002, which is not there"), store.latest():
        pass


def test_a_damaged_resume_point_is_refused(tmp_path: Path) -> None:
    point = tmp_path / "resume" / "step-00000004"
    point.mkdir(parents=True)
    (point / "tables-rank00000.safetensors").write_bytes(b"\x00" * 4096)
    (point / "progress.json").write_text("{}\n")
    write_manifest(point, 0, digests(point))
    (tmp_path / "resume" / "LATEST").write_text("step-00000004\n")
    store = LocalResumeStore(tmp_path / "resume")
    with store.latest() as latest:
        assert latest == point
    (point / "tables-rank00000.safetensors").write_bytes(b"\x01" + b"\x00" * 4095)
    with pytest.raises(UserError, match=r"tables-rank00000.safetensors: sha256 .* the file is damaged"), store.latest():
        pass
    (point / "progress.json").unlink()
    with pytest.raises(UserError, match=r"progress.json: missing"), store.latest():
        pass
