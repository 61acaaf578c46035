"""A run directory remembers the settings it was started with (run.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cp_dist.errors import UserError
from cp_dist.runs import RunDir


def test_a_rerun_must_bring_the_same_settings(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    started = {"stage": "ctr", "config": {"train": {"seed": 0, "epochs": 3}}}
    run.record_settings(started)
    run.record_settings(started)  # the same: resumes
    with pytest.raises(UserError, match=r"holds a run started with other settings \(config.train.epochs: 3 then, 4 now\)"):
        run.record_settings({"stage": "ctr", "config": {"train": {"seed": 0, "epochs": 4}}})
    with pytest.raises(UserError, match=r"config.train.seed: 0 then, None now"):
        run.record_settings({"stage": "ctr", "config": {"train": {"epochs": 3}}})


def test_a_path_is_the_same_however_it_is_spelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out runs/x` from the project and `--out /project/runs/x` name one run (paper tables reuse
    the main job's runs); another directory is another run."""
    monkeypatch.chdir(tmp_path)
    run = RunDir(tmp_path / "runs" / "x")
    run.path.mkdir(parents=True)
    paths = ("out_dir",)
    run.record_settings({"stage": "ctr", "out_dir": "runs/x"}, paths=paths)
    assert json.loads((run.path / "run.json").read_text())["out_dir"] == str(tmp_path / "runs" / "x")
    run.record_settings({"stage": "ctr", "out_dir": str(tmp_path / "runs" / "x")}, paths=paths)
    run.record_settings({"stage": "ctr", "out_dir": "runs/../runs/x"}, paths=paths)
    with pytest.raises(UserError, match="out_dir"):
        run.record_settings({"stage": "ctr", "out_dir": "runs/y"}, paths=paths)


def test_settings_added_to_cp_dist_since_the_run_started_do_not_count(tmp_path: Path) -> None:
    """A run made before a config section existed (e.g. ctrl) is still the same run after an upgrade."""
    run = RunDir(tmp_path)
    run.record_settings({"stage": "ctr", "config": {"train": {"seed": 0}}})
    run.record_settings({"stage": "ctr", "config": {"train": {"seed": 0}, "ctrl": {"temperature": 0.07}}})
