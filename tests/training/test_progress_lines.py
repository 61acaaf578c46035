"""Logs see progress within an epoch (tqdm's bar shows only in terminals): a line per interval with
the step, the loss and the time left, and none when the interval is 0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cp_dist.config import load_config
from cp_dist.data.prepare import prepare
from cp_dist.data.synth import synth
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train

LINE = re.compile(r"^ctr epoch (\d): step (\d+)/(\d+), loss \d+\.\d{4} \(rank 0, since the last line\), "
                  r"\d+ (s|min) so far, about \d+ (s|min) left$", re.MULTILINE)


@pytest.mark.parametrize(("every", "max_steps"), [(1e-9, None), (1e-9, 9), (0.0, None)],
                         ids=["every batch", "max_steps within the second epoch", "none"])
def test_progress_lines_in_logs(every: float, max_steps: int | None, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """With max_steps ending the run within an epoch, that epoch's lines count to where it ends."""
    synth("ml-1m", 3000, tmp_path / "raw")
    prepare("ml-1m", tmp_path / "raw", tmp_path / "data")
    settings = ["train.epochs=2", "train.patience=5", "train.global_batch_size=256", f"train.log_every_seconds={every}"]
    if max_steps is not None:
        settings.insert(0, f"train.max_steps={max_steps}")
    config = load_config("ml-100k", settings)
    metrics = train(StageJob("ctr", tmp_path / "data", tmp_path / "run", config))
    lines = [m.groups()[:3] for m in LINE.finditer(capsys.readouterr().out)]
    if every == 0:
        assert lines == []
        return
    steps = [h["steps"] for h in metrics["history"]]
    assert len(steps) == 2 and (max_steps is None or (sum(steps) == max_steps and steps[1] < steps[0]))
    # every batch but each epoch's last, which its epoch line reports
    assert lines == [(str(e), str(b), str(n)) for e, n in enumerate(steps) for b in range(1, n)]
    quiet = load_config("ml-100k", [*settings[:-1], "train.log_every_seconds=0"])
    assert train(StageJob("ctr", tmp_path / "data", tmp_path / "run", quiet)) == metrics, "logging is no run setting"
