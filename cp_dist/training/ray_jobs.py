"""Ray Train orchestration of PA-MLM and finetuning: a TorchTrainer whose workers run
cp_dist.training.resumable.run_stage on the hybrid engine, report checkpoints to Ray storage, and
are restarted by Ray (FailureConfig) to resume from the last one.

The job scripts (jobs/pamlm_goodreads.py, jobs/finetune_goodreads.py) are thin wrappers around
`job_main`, which is what `ray job submit -- python jobs/...` runs on the head node.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cp_dist.config import Config, load_config
from cp_dist.data.errors import DataError
from cp_dist.data.fetch import cache_root
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.process_group import RankInfo, quiet_library_noise, resolve_placement
from cp_dist.training.loop import CHECKPOINT_DIR
from cp_dist.training.resumable import METRICS_FILE, StageJob, check_job, run_stage


class RayCheckpoints:
    """Checkpoints through Ray Train: each worker writes its files to a temporary directory and
    reports it; Ray gathers every worker's files into one checkpoint in run storage, and hands the
    latest to the workers it restarts."""

    @contextmanager
    def latest(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)

    def save(self, write: Callable[[Path], None], metrics: dict) -> None:
        import ray.train

        with tempfile.TemporaryDirectory(prefix="cp_dist-checkpoint-") as directory:
            write(Path(directory))
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
    run_stage(rank, job, RayCheckpoints())


def trainer(job: StageJob, storage: str, name: str):
    """The TorchTrainer of one stage: workers, resources and restarts from job.config.distributed."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    distributed = job.config.distributed
    gpus = distributed.gpus_per_worker
    placement = resolve_placement(distributed, cuda=gpus > 0)
    return TorchTrainer(
        _worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=distributed.nproc, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": distributed.cpus_per_worker, **({"GPU": gpus} if gpus else {})}),
        torch_config=TorchConfig(backend=placement.backend),
        run_config=RunConfig(name=name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=distributed.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )


def run_on_ray(job: StageJob, storage: str, name: str) -> dict:
    """Runs the stage on the Ray cluster this process is connected to (or a local one); returns
    the metrics the workers wrote to job.out_dir."""
    result = trainer(job, storage, name).fit()
    if result.error is not None:
        raise result.error
    return json.loads((job.out_dir / METRICS_FILE).read_text())


# --- the job scripts -------------------------------------------------------------------------

JOB_HELP = """\
{stage_title} on {dataset} with Ray Train: TorchRec-sharded tables + DeepSpeed ZeRO, checkpoints
in Ray storage, restarts from the last checkpoint when a worker dies.

  ray job submit --working-dir . -- python jobs/{script} --preset {dataset}-smoke
  ray job submit --working-dir . -- python jobs/{script} --preset {dataset}-production \\
      --raw /mnt/data/{dataset}-raw --work /mnt/cluster_storage/cp_dist --storage /mnt/cluster_storage/ray

Without --raw, the job writes synthetic rows in {dataset}'s raw format (the smoke preset's data).
--work must be a directory every node mounts (prepared data and results); --storage is Ray
Train's storage_path (a shared directory; Ray also takes a URI such as s3://bucket/path).
"""


def job_parser(stage: str, dataset: str, script: str) -> argparse.ArgumentParser:
    title = "PA-MLM (prompt-augmented masked-LM pretraining)" if stage == "pamlm" else "Finetuning with the PLM"
    parser = argparse.ArgumentParser(description=JOB_HELP.format(stage_title=title, dataset=dataset, script=script),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=f"{dataset}-smoke",
                        help=f"{dataset}-smoke (2 CPU workers, minutes) or {dataset}-production (default: %(default)s)")
    parser.add_argument("--raw", type=Path, help=f"{dataset}'s raw files (default: synthetic rows)")
    parser.add_argument("--synthetic-rows", type=int, default=4000, help="rows of synthetic data without --raw")
    parser.add_argument("--work", type=Path, default=cache_root() / "jobs" / dataset,
                        help="prepared data and results; absolute, since a job runs in a temporary copy of "
                             "its working directory (default: %(default)s)")
    parser.add_argument("--storage", help="Ray Train storage_path (default: WORK/ray)")
    parser.add_argument("--name", default=stage, help="the run: results in WORK/NAME, checkpoints in STORAGE/NAME (default: %(default)s)")
    if stage == "finetune":
        parser.add_argument("--pretrained", type=Path, help="a PA-MLM run directory (default: WORK/pamlm)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a preset value")
    parser.add_argument("--fail-at-step", type=int, help="rehearse a failure: the last worker kills itself at this step once")
    return parser


def prepared_data(dataset: str, config: Config, raw: Path | None, synthetic_rows: int, work: Path) -> Path:
    """WORK/data: the prepared splits with the encoder's token ids, made once."""
    from cp_dist.data.prepare import prepare
    from cp_dist.data.synth import synth
    from cp_dist.data.text import ensure_tokenized

    data = work / "data"
    if not (data / "meta.json").is_file():
        if raw is None:
            raw = work / "raw"
            print(f"no --raw: writing {synthetic_rows:,} synthetic rows in {dataset}'s raw format to {raw}")
            synth(dataset, synthetic_rows, raw)
        prepare(dataset, raw, data)
    meta = DatasetMeta.load(data)
    if meta.dataset != dataset:
        raise DataError(f"{data}: holds {meta.dataset}, not {dataset}; pick another --work")
    ensure_tokenized(data, config.prompt.plm, config.prompt.max_length)
    return data


def job_main(stage: str, dataset: str, script: str, argv: list[str] | None = None) -> dict:
    args = job_parser(stage, dataset, script).parse_args(argv)
    config = load_config(args.preset, args.set)
    work = args.work.resolve()  # workers run elsewhere: every path they see is absolute
    data = prepared_data(dataset, config, args.raw, args.synthetic_rows, work)
    init_from = None
    if stage == "finetune":
        init_from = (args.pretrained or work / "pamlm").resolve() / CHECKPOINT_DIR
    job = StageJob(stage, data, work / args.name, config, init_from=init_from, fail_at_step=args.fail_at_step)
    check_job(job)
    storage = args.storage or str(work / "ray")
    print(f"{stage} on {dataset}: preset {args.preset}, {config.distributed.nproc} workers, ZeRO-{config.distributed.zero_stage}, "
          f"tables {config.distributed.sharding}; storage {storage}")
    result = run_on_ray(job, storage, args.name)
    last = result["history"][-1]
    summary = f"{stage} finished: {result['steps']} steps, last epoch loss {last['loss']:.4f}"
    if stage == "finetune":
        summary += f", best epoch {result['best_epoch']}: valid AUC {result['valid']['auc']:.4f}, test AUC {result['test']['auc']:.4f}"
    print(f"{summary}\nwrote {work / args.name}/checkpoint and {work / args.name}/metrics.json")
    return result
