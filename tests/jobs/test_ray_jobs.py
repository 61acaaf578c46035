"""The Ray jobs, submitted with `ray job submit` to local Ray clusters (loopback only, token
authentication on): the preparation jobs; then cluster/README.md's rehearsal as written (the smoke
preset's PA-MLM with 2 workers, then finetuning from it) in a fresh HOME; then at once, on the
rehearsal's data: the same PA-MLM with a worker killed at its start (Ray restarts the workers and
they start over) and then mid-run (they resume from the last checkpoint), with more failures than
allowed, and finetuning with its rows streamed by Ray Data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

from cp_dist.cli import main
from cp_dist.data.meta import SPLITS, DatasetMeta
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.data.synth import synth
from tests.jobs.conftest import CLUSTER_README, REHEARSAL, doc_block, run_documented, run_ray_jobs

#: An uninterrupted run and a resumed one replay the same float32 operations in the same order:
#: measured gap 0.0; this leaves room for another machine's kernels.
TOLERANCE = 1e-5

pytestmark = pytest.mark.slow  # minute-long end-to-end checks


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, ml100k_raw: Path) -> dict:
    root = tmp_path_factory.mktemp("ray-jobs")
    logs = root / "logs"
    synth("goodreads", 3000, root / "goodreads-raw")
    codes = run_ray_jobs([
        # as their own jobs on the cluster, in blocks small enough that parsing, counting and the cut
        # points span many; min-count 5 leaves some users OOV
        {"prepare": ["python", "jobs/prepare.py", "--dataset", "goodreads", "--raw", str(root / "goodreads-raw"),
                     "--out", str(root / "goodreads"), "--block-mib", "0.0625", "--min-count", "5"],
         "prepare-ml-100k": ["python", "jobs/prepare.py", "--dataset", "ml-100k", "--raw", str(ml100k_raw),
                             "--out", str(root / "ml-100k"), "--block-mib", "0.25"]}], logs)
    home = root / "home"  # a fresh one: no Ray token yet
    rehearsal = run_documented(doc_block(CLUSTER_README, REHEARSAL), home, logs / "rehearsal.txt")
    work = home / ".cache" / "cp_dist" / "jobs" / "goodreads"  # the jobs' default --work
    common = ["--work", str(work)]
    codes |= run_ray_jobs([
        # killed before its first checkpoint (Ray restarts it from the beginning), then after its second
        # (Ray restarts it from the last checkpoint)
        {"pamlm-killed": ["python", "jobs/pamlm_goodreads.py", *common, "--name", "pamlm-killed", "--fail-at-step", "0", "5",
                          "--set", "distributed.max_failures=2"],
         # killed with no restart allowed: the job fails, and says so
         "pamlm-fatal": ["python", "jobs/pamlm_goodreads.py", *common, "--name", "pamlm-fatal", "--fail-at-step", "3",
                         "--set", "distributed.max_failures=0"],
         # from the rehearsal's PA-MLM model, the rows streamed by Ray Data instead of read by each worker's SplitLoader
         "finetune-ray-data": ["python", "jobs/finetune_goodreads.py", *common, "--name", "finetune-ray-data",
                               "--set", "train.batch_source=ray_data"]},
    ], logs, cpus=8)
    return {"work": work, "storage": work / "ray", "logs": logs, "codes": codes, "root": root, "rehearsal": rehearsal}


def _log(jobs: dict, name: str) -> str:
    return (jobs["logs"] / f"{name}.txt").read_text()


def _succeeded(jobs: dict, name: str) -> None:
    assert jobs["codes"][name] == 0, _log(jobs, name)[-5000:]


def _rehearsed(jobs: dict) -> None:
    assert jobs["rehearsal"].returncode == 0, _log(jobs, "rehearsal")[-5000:]


def test_the_cluster_readme_rehearsal_runs_as_written_on_a_fresh_home(jobs: dict) -> None:
    """cluster/README.md's step 1, every line as typed, where no Ray has run before (the token is
    made by the block; tests/jobs/test_documented_commands.py runs it where one exists)."""
    _rehearsed(jobs)
    log = _log(jobs, "rehearsal")
    assert len(re.findall(r"Job '\S+' succeeded", log)) == 2, log[-3000:]
    assert (jobs["root"] / "home" / ".ray" / "auth_token").is_file(), "token authentication was on"
    for run in ("pamlm", "with_plm"):  # the default --name: the stage
        assert (jobs["work"] / run / "metrics.json").is_file() and (jobs["work"] / run / "checkpoint" / "checkpoint.json").is_file()


def test_smoke_pamlm_job_completes_with_metrics_and_a_checkpoint(jobs: dict) -> None:
    _rehearsed(jobs)
    run = jobs["work"] / "pamlm"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["engine"] == "hybrid" and metrics["zero_stage"] == 2 and metrics["steps"] == 8
    assert all("row_wise" in plan for plan in metrics["sharding"].values())
    losses = metrics["history"][0]["step_losses"]
    assert len(losses) == 8 and all(np.isfinite(losses)) and metrics["resumed_at"] == []
    index = json.loads((run / "checkpoint" / "checkpoint.json").read_text())
    assert index["stage"] == "pamlm" and list(index["files"]) == ["tables-rank00000.safetensors", "tables-rank00001.safetensors",
                                                                 "dense.safetensors"]
    checkpoints = [p for p in (jobs["storage"] / "pamlm").glob("checkpoint_*") if p.is_dir()]
    assert len(checkpoints) == 2, "CheckpointConfig(num_to_keep=2)"


def test_killed_workers_start_over_then_resume_from_the_last_checkpoint_and_match(jobs: dict) -> None:
    _succeeded(jobs, "pamlm-killed")
    killed = json.loads((jobs["work"] / "pamlm-killed" / "metrics.json").read_text())
    clean = json.loads((jobs["work"] / "pamlm" / "metrics.json").read_text())
    assert {p.name for p in (jobs["work"] / "pamlm-killed").glob(".failure-rehearsed-at-*")} == {
        ".failure-rehearsed-at-0", ".failure-rehearsed-at-5"}, "a worker died at step 0 and at step 5"
    # Killed at step 0 there is no checkpoint: the restarted workers start over and resume nothing.
    # Checkpoints come every 2 steps and the worker dies again before step 5. Ray resumes from the
    # last checkpoint it had registered: step 4, or step 2 when the kill overtook step 4's registration.
    assert len(killed["resumed_at"]) == 1 and killed["resumed_at"][0] in (2, 4), killed["resumed_at"]
    assert set(re.findall(r"resumed from the checkpoint at step (\d+)", _log(jobs, "pamlm-killed"))) == {str(killed["resumed_at"][0])}
    gap = np.max(np.abs(np.array(killed["history"][0]["step_losses"]) - clean["history"][0]["step_losses"]))
    print(f"largest step-loss gap, resumed against uninterrupted: {gap:.2e}")
    assert gap <= TOLERANCE
    weights = []
    for run in ("pamlm", "pamlm-killed"):
        with safe_open(str(jobs["work"] / run / "checkpoint" / "dense.safetensors"), framework="np") as handle:
            weights.append({k: handle.get_tensor(k) for k in handle.keys()})
    assert max(np.abs(weights[0][k] - weights[1][k]).max() for k in weights[0]) <= TOLERANCE
    # Every checkpoint Ray kept is complete: each rank's files, DeepSpeed's states, the progress.
    for checkpoint in [p for p in (jobs["storage"] / "pamlm-killed").glob("checkpoint_*") if p.is_dir()]:
        names = {p.name for p in checkpoint.iterdir()}
        assert {"progress.json", "tables-rank00000.safetensors", "tables-rank00001.safetensors",
                "rng-rank00000.safetensors", "rng-rank00001.safetensors", "zero",
                "manifest-rank00000.json", "manifest-rank00001.json"} <= names, names
        states = {p.name for p in (checkpoint / "zero").iterdir()}
        assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= states, states
        json.loads((checkpoint / "progress.json").read_text())
    assert not list(jobs["storage"].rglob("*.staging")) and not list(jobs["work"].rglob("*.staging"))


def test_finetune_job_starts_from_the_pamlm_model_on_rows_streamed_by_ray_data(jobs: dict) -> None:
    _succeeded(jobs, "finetune-ray-data")
    metrics = json.loads((jobs["work"] / "finetune-ray-data" / "metrics.json").read_text())
    assert metrics["stage"] == "with_plm" and metrics["world_size"] == 2
    assert metrics["model_info"]["fusion_weight"] != 0.5, "the fusion weight trains"
    assert metrics["best_epoch"] in (0, 1) and len(metrics["history"]) >= 1
    # Streamed: Ray Data ran the read of the row groups, and each worker took an equal share in whole batches.
    assert re.search(r"MapBatches\(read\)", _log(jobs, "finetune-ray-data")), _log(jobs, "finetune-ray-data")[-3000:]
    rows = DatasetMeta.load(jobs["work"] / "data").splits["train"]["rows"]
    per_rank = metrics["config"]["finetune"]["global_batch_size"] // 2
    assert [epoch["steps"] for epoch in metrics["history"]] == [rows // 2 // per_rank] * len(metrics["history"])
    assert all(np.isfinite(epoch["step_losses"]).all() for epoch in metrics["history"])
    # checkpoint/ is the best epoch's model: rebuilt from it alone, it scores what the job reported.
    assert main(["evaluate", "--run", str(jobs["work"] / "finetune-ray-data"), "--data", str(jobs["work"] / "data"),
                 "--split", "valid"]) == 0
    valid = json.loads((jobs["work"] / "finetune-ray-data" / "eval_valid.json").read_text())
    assert abs(valid["auc"] - metrics["valid"]["auc"]) < 1e-5


def test_more_failures_than_allowed_fail_the_job(jobs: dict) -> None:
    assert jobs["codes"]["pamlm-fatal"] != 0
    log = _log(jobs, "pamlm-fatal")
    assert "SIGKILL" in log or "died" in log or "exited" in log, log[-3000:]
    assert not (jobs["work"] / "pamlm-fatal" / "metrics.json").exists()


def _assert_same_preparation(ray_dir: Path, local_dir: Path) -> None:
    """The Ray engine's output equals the local engine's: rows (and their order), vocabularies, meta.json."""
    ray_meta, local_meta = DatasetMeta.load(ray_dir), DatasetMeta.load(local_dir)
    assert sum(len(ray_meta.split_files(ray_dir, split)) for split in SPLITS) > len(SPLITS), "many part files"
    for split in SPLITS:
        local = pq.read_table(local_dir / f"{split}.parquet")
        ray_rows = ray_meta.read_split(ray_dir, split, columns=local.column_names)
        assert ray_rows.equals(local), split
    assert pq.read_table(ray_dir / "vocab.parquet").equals(pq.read_table(local_dir / "vocab.parquet"))
    assert {**ray_meta.__dict__, "tokenizer": None} == local_meta.__dict__


def test_prepare_job_on_goodreads_equals_the_local_engine(jobs: dict, tmp_path: Path) -> None:
    """Gzip JSON in many blocks, users known by key only (the groupby, sort and join path), min-count 5."""
    _succeeded(jobs, "prepare")
    assert "time split: valid from (timestamp, line)" in _log(jobs, "prepare")
    prepare("goodreads", jobs["root"] / "goodreads-raw", tmp_path / "local", PrepareOptions(min_count=5))
    _assert_same_preparation(jobs["root"] / "goodreads", tmp_path / "local")
    vocab = pq.read_table(tmp_path / "local" / "vocab.parquet").to_pandas()
    assert vocab.query("field == 'user_id' and index == 0").train_count.item() > 0, "min-count 5 leaves some users OOV"


def test_prepare_job_on_ml100k_equals_the_local_engine(jobs: dict, ml100k_raw: Path, tmp_path: Path) -> None:
    """Many blocks, a side table of users, timestamps tied at the cuts (ML-100K has them)."""
    _succeeded(jobs, "prepare-ml-100k")
    prepare("ml-100k", ml100k_raw, tmp_path / "local")
    _assert_same_preparation(jobs["root"] / "ml-100k", tmp_path / "local")
