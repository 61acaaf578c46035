"""`cp-dist pretrain` and `cp-dist finetune` killed mid-epoch (SIGKILL, as a lost machine would be) and
run again: they resume from the last resume point and end with the uninterrupted run's step losses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cp_dist.config import load_config
from tests.helpers import run

CP_DIST = Path(sys.executable).with_name("cp-dist")
pytestmark = pytest.mark.slow


def _cp_dist(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CP_DIST), *args], capture_output=True, text=True, timeout=600, check=False)


def _settings(setup) -> list[str]:
    return [*setup[1], "distributed.checkpoint_every_steps=2"]


@pytest.fixture(scope="module")
def pamlm_run(setup, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The uninterrupted PA-MLM run: the pretrain test's reference, the finetune test's starting point."""
    out = tmp_path_factory.mktemp("pamlm") / "run"
    return run("pamlm", setup[0] / "data", out, load_config("ml-1m", _settings(setup))), out


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_killed_run_resumes_and_matches(setup, pamlm_run, tmp_path: Path, command: str) -> None:
    base, settings = setup[0], _settings(setup)
    if command == "pretrain":
        clean, extra = pamlm_run[0], []
    else:
        clean = run("with_plm", base / "data", tmp_path / "clean", load_config("ml-1m", settings), start=pamlm_run[1])
        extra = ["--with-plm", "--pretrained", str(pamlm_run[1])]
    assert len(clean["history"][0]["step_losses"]) > 6, "the kill must come mid-epoch"

    argv = [command, *extra, "--data", str(base / "data"), "--out", str(tmp_path / "killed"), "--preset", "ml-1m",
            *[f"--set={s}" for s in settings], "--fail-at-step", "5"]
    killed = _cp_dist(*argv)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "killed" / "resume" / "LATEST").read_text().strip() == "step-00000004"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = _cp_dist(*argv)  # the same command again: it resumes, and the rehearsed failure does not recur
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint at step 4" in resumed.stdout
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert metrics["resumed_at"] == [4] and clean["resumed_at"] == []
    assert metrics["history"][0]["step_losses"] == clean["history"][0]["step_losses"]
    assert not (tmp_path / "killed" / "resume").exists(), "a finished run keeps its result, not its resume points"

    if command == "pretrain":  # once is enough: the refusal is the run directory's, whatever the stage
        again = _cp_dist(*argv)
        assert again.returncode == 2 and "already holds a finished run" in again.stderr
