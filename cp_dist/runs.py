"""A run directory: what every training run writes, and where. The one owner of these names, and
of the file names inside a checkpoint and a resume point.

    RUN/run.json      the settings the run was started with; a rerun resumes only with the same
    RUN/resume/       a local run's resume points (step-<N>/ and LATEST); removed once it finishes
    RUN/checkpoint/   the model, in cp_dist.distributed.checkpoint's format: the selected epoch's
    RUN/metrics.json  the result, one schema for every stage (cp_dist.training.loop.result)
    RUN/test_predictions.parquet  the selected model's click probability of every test row, in order

Ray runs keep their resume points in Ray storage instead of RUN/resume/; the rest is the same.

    checkpoint/checkpoint.json               the index: table shapes, files and their sha256, architecture, config
    checkpoint/dense.safetensors             every weight but the tables'
    checkpoint/tables-rank<R>.safetensors    the table blocks rank R held, keyed by block_key
    step-<N>/progress.json                   the loop's position (epoch, step, selection so far)
    step-<N>/rng-rank<R>.safetensors         rank R's RNG states
    step-<N>/tables-rank<R>.safetensors      rank R's table shards and their optimizer state
    step-<N>/dense-state.pt                  the plain engine's dense weights, AdamW and schedule state
    step-<N>/zero/                           the hybrid engine's DeepSpeed checkpoint
    step-<N>/manifest-rank<R>.json           sha256 of the files rank R wrote
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cp_dist.errors import UserError
from cp_dist.io import atomic_file, write_json

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.parquet"
SETTINGS_FILE = "run.json"
RESUME_DIR = "resume"
INDEX_FILE = "checkpoint.json"
DENSE_FILE = "dense.safetensors"
PROGRESS_FILE = "progress.json"
DENSE_STATE_FILE = "dense-state.pt"
ENGINE_TAG = "zero"  # DeepSpeed's checkpoint sub-folder
MANIFESTS = "manifest-rank*.json"
FAILURE_MARKER = ".failure-rehearsed-at-"  # + the step: a rehearsed failure (--fail-at-step) happens once per run


def tables_file(rank: int) -> str:
    """Rank `rank`'s table blocks, in a checkpoint and in a resume point."""
    return f"tables-rank{rank:05d}.safetensors"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank:05d}.safetensors"


def manifest_file(rank: int) -> str:
    return f"manifest-rank{rank:05d}.json"


def block_key(table: str, row: int, col: int) -> str:
    """A table block's key: the table's name and the block's offsets in the full table, so that a
    checkpoint loads into any sharding or world size."""
    return f"{table}@{row},{col}"


def parse_block_key(key: str) -> tuple[str, int, int]:
    table, _, offsets = key.rpartition("@")
    row, col = map(int, offsets.split(","))
    return table, row, col


#: Settings a run may change when it is resumed, none of which changes what it trains (fail_at_step:
#: fail_at_steps' name in runs started before it took several steps).
RESUMABLE_CHANGES = ("config.distributed.max_failures", "config.train.compile", "config.train.log_every_seconds",
                     "config.prompt.eval_batch_size", "fail_at_steps", "fail_at_step")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS_FILE

    def write_predictions(self, probabilities: np.ndarray) -> None:
        with atomic_file(self.predictions_file) as tmp:
            pq.write_table(pa.table({"probability": pa.array(probabilities, pa.float32())}), tmp)

    def predictions(self) -> np.ndarray:
        if not self.predictions_file.is_file():
            raise UserError(f"{self.predictions_file}: not found; the run kept no test predictions (a stage that "
                            "does not select on validation, or a run of an older cp_dist)")
        return pq.read_table(self.predictions_file)["probability"].to_numpy()

    @property
    def resume(self) -> Path:
        return self.path / RESUME_DIR

    def failure_marker(self, step: int) -> Path:
        return self.path / f"{FAILURE_MARKER}{step}"

    @property
    def finished(self) -> bool:
        return self.metrics_file.is_file()

    def metrics(self) -> dict:
        if not self.finished:
            raise UserError(f"{self.metrics_file}: not found; the run in {self.path} has not finished")
        return json.loads(self.metrics_file.read_text())

    def write_metrics(self, payload: dict) -> None:
        write_json(self.metrics_file, payload)

    def record_settings(self, settings: dict, resumable: Sequence[str] = (), paths: Sequence[str] = ()) -> None:
        """Writes run.json for a new run; for an existing one, checks that `settings` are those it
        was started with, but for the dotted keys in `resumable`. Otherwise a rerun would silently
        continue (or return) a different run. The top-level keys in `paths` hold file paths, compared
        as absolute paths: `runs/x` from /work and `/work/runs/x` are one run (a path recorded
        relative, before cp_dist recorded them absolute, is taken from the current directory)."""
        settings = _absolute(settings, paths)
        path = self.path / SETTINGS_FILE
        if not path.is_file():
            write_json(path, settings)
            return
        then = _absolute(json.loads(path.read_text()), paths)
        key = first_difference(then, settings, resumable)
        if key is not None:
            then, now = _flat(then), _flat(settings)
            raise UserError(f"{self.path}: holds a run started with other settings ({key}: {then.get(key)!r} "
                            f"then, {now.get(key)!r} now); resume it as it was, pass --overwrite, or pick another "
                            "output directory")

    def clear(self) -> None:
        """Removes what a run writes here (and nothing else), for --overwrite."""
        for name in (CHECKPOINT_DIR, RESUME_DIR):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for name in (METRICS_FILE, SETTINGS_FILE, PREDICTIONS_FILE):
            (self.path / name).unlink(missing_ok=True)
        for marker in self.path.glob(f"{FAILURE_MARKER}*"):
            marker.unlink()


def first_difference(then: dict, now: dict, ignored: Sequence[str] = ()) -> str | None:
    """The first dotted key whose value differs between settings recorded `then` and `now`, or None.
    Keys in `ignored` (settings that do not change a result) and keys that `now` has but `then` lacks
    (settings cp_dist gained later: what was recorded cannot depend on them) do not count."""
    before = {k: v for k, v in _flat(then).items() if k not in ignored}
    after = {k: v for k, v in _flat(now).items() if k not in ignored and k in before}
    return next((k for k in sorted(before | after) if before.get(k) != after.get(k)), None)


def _absolute(settings: dict, paths: Sequence[str]) -> dict:
    return {k: os.path.abspath(v) if k in paths and v is not None else v for k, v in settings.items()}


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat
