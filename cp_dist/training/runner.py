"""Running a stage: its settings checked once on the driver, then the ranks launched (here, or by
Ray Train in cp_dist.training.ray_train), then the result read back from the run directory."""

from __future__ import annotations

import dataclasses

from cp_dist.distributed.checkpoint import read_index
from cp_dist.distributed.process_group import RankInfo, launch, resolve_placement
from cp_dist.errors import UserError
from cp_dist.runs import RESUMABLE_CHANGES, RunDir
from cp_dist.training.loop import StageJob, run_stage
from cp_dist.training.resume import LocalResumeStore
from cp_dist.training.stages import STAGES


def check_job(job: StageJob) -> None:
    """Everything that would otherwise fail inside every rank, checked before any starts; and a run
    directory resumes only with the settings it was started with (run.json)."""
    config = job.config
    stage = STAGES.lookup(job.stage, "stage")
    stage.check(config, job.data_dir, job.init_from)
    resolve_placement(config.distributed)
    if config.distributed.engine == "hybrid":
        from cp_dist.distributed.engines.hybrid import deepspeed_config

        settings = stage.settings_of(config)
        deepspeed_config(config, settings.global_batch_size, config.distributed.nproc)
    if job.init_from is not None:
        read_index(job.init_from)  # there, whole and unchanged
    job.out_dir.mkdir(parents=True, exist_ok=True)
    RunDir(job.out_dir).record_settings(
        {**{k: str(v) if v is not None else None for k, v in dataclasses.asdict(job).items() if k != "config"},
         "config": config.to_dict()}, RESUMABLE_CHANGES, paths=("data_dir", "out_dir", "init_from"))


def train(job: StageJob) -> dict:
    """Runs the stage on config.distributed.nproc local ranks (in this process for one, started on
    loopback otherwise) and returns its metrics. A finished run returns its metrics as they are; an
    unfinished one (killed, say) resumes from its last resume point in RUN/resume/, which is removed
    once the run finishes. Either way only with the settings the run was started with."""
    run = RunDir(job.out_dir)
    if job.config.train.batch_source == "ray_data":
        raise UserError("train.batch_source ray_data streams through Ray Train: run the stage as a Ray job (jobs/), "
                        "or use train.batch_source parquet")
    check_job(job)
    if not run.finished:
        launch(_local_rank, job.config.distributed, job)
        LocalResumeStore(run.resume).clear()
    return run.metrics()


def _local_rank(rank: RankInfo, job: StageJob) -> None:
    run_stage(rank, job, LocalResumeStore(RunDir(job.out_dir).resume))
