"""Ray Train orchestration of a stage: a TorchTrainer whose workers run the one training loop
(cp_dist.training.loop.run_stage), hand resume points to Ray storage, and are restarted by Ray
(FailureConfig) to resume from the last one. The job scripts in jobs/ submit it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cp_dist.data.streaming import STREAM, training_stream
from cp_dist.distributed.process_group import RankInfo, quiet_library_noise, resolve_placement
from cp_dist.io import digests
from cp_dist.runs import RunDir
from cp_dist.training.loop import StageJob, run_stage
from cp_dist.training.resume import verify_resume_point, write_manifest
from cp_dist.training.runner import check_job
from cp_dist.training.stages import STAGES


class RayResumeStore:
    """Each worker writes its files to a temporary directory, with their digests, and reports it;
    Ray gathers every worker's files into one checkpoint in run storage, and hands the latest to
    the workers it restarts."""

    @contextmanager
    def latest(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            verify_resume_point(Path(directory))
            yield Path(directory)

    def save(self, write: Callable[[Path], None], metrics: dict) -> None:
        import ray.train

        with tempfile.TemporaryDirectory(prefix="cp_dist-checkpoint-") as directory:
            write(Path(directory))
            write_manifest(Path(directory), ray.train.get_context().get_world_rank(), digests(Path(directory)))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _worker(loop_config: dict) -> None:
    """One Ray Train worker = one rank; Ray has already joined the process group."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    job: StageJob = loop_config["job"]
    quiet_library_noise()
    torch.set_num_threads(job.config.distributed.cpus_per_worker)
    context = ray.train.get_context()
    placement = resolve_placement(job.config.distributed, cuda=job.config.distributed.gpus_per_worker > 0)
    device = ray.train.torch.get_device() if placement.device_type == "cuda" else torch.device("cpu")
    table_device = device if placement.table_device_type == "cuda" else torch.device("cpu")
    rank = RankInfo(context.get_world_rank(), context.get_world_size(), device, dist.get_backend(), table_device)
    run_stage(rank, job, RayResumeStore())


def trainer(job: StageJob, storage: str, name: str):
    """The TorchTrainer of one stage: workers, resources and restarts from job.config.distributed."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    distributed = job.config.distributed
    gpus = distributed.gpus_per_worker
    placement = resolve_placement(distributed, cuda=gpus > 0)
    streams = {}
    if job.config.train.batch_source == "ray_data":
        stage = STAGES.lookup(job.stage, "stage")
        streams[STREAM] = training_stream(job.data_dir, stage.training_splits(job.config), text=stage.reads_text,
                                          seed=job.config.train.seed, cpus=job.config.train.stream_cpus)
    return TorchTrainer(
        _worker,
        train_loop_config={"job": job},
        datasets=streams,
        scaling_config=ScalingConfig(num_workers=distributed.nproc, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": distributed.cpus_per_worker, **({"GPU": gpus} if gpus else {})}),
        torch_config=TorchConfig(backend=placement.backend),
        run_config=RunConfig(name=name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=distributed.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )


def run_on_ray(job: StageJob, storage: str, name: str) -> dict:
    """Runs the stage on the Ray cluster this process is connected to (or a local one), its settings
    checked here first; returns the metrics the workers wrote to the run directory."""
    check_job(job)
    result = trainer(job, storage, name).fit()
    if result.error is not None:
        raise result.error
    return RunDir(job.out_dir).metrics()
