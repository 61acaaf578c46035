"""The command line of the Ray job scripts beside this file (`ray job submit -- python jobs/...`):
prepare the data once in a shared work directory, check the settings here on the driver, then
run the stage under Ray Train (cp_dist.training.ray_train)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cp_dist.config import Config, load_config
from cp_dist.data.fetch import cache_root
from cp_dist.data.meta import DatasetMeta
from cp_dist.errors import UserError
from cp_dist.progress import log_progress
from cp_dist.runs import RunDir
from cp_dist.training.stages import STAGES

JOB_HELP = """\
{title} on {dataset} with Ray Train: TorchRec-sharded tables and the preset's engine (the
production presets: DeepSpeed ZeRO), resume points in Ray storage, restarts from the last one when a
worker dies.

  export RAY_AUTH_MODE=token    # the cluster's token authentication (cluster/README.md, step 1)
  ray job submit --working-dir . -- python jobs/{script} --preset {dataset}-smoke
  ray job submit --working-dir . -- python jobs/{script} --preset {dataset}-production \\
      --raw /mnt/data/{dataset}-raw --work /mnt/cluster_storage/cp_dist --storage /mnt/cluster_storage/ray

Without --raw, the job writes synthetic rows in {dataset}'s raw format (the smoke preset's data).
--work must be a directory every node mounts (prepared data and results); --storage is Ray
Train's storage_path (a shared directory; Ray also takes a URI such as s3://bucket/path).
"""


def job_parser(stage: str, dataset: str, script: str) -> argparse.ArgumentParser:
    """stage: a name in cp_dist.training.stages.STAGES."""
    title = STAGES[stage].description
    parser = argparse.ArgumentParser(description=JOB_HELP.format(title=title[0].upper() + title[1:], dataset=dataset,
                                                                 script=script),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=f"{dataset}-smoke",
                        help=f"{dataset}-smoke (2 CPU workers, minutes) or {dataset}-production (default: %(default)s)")
    parser.add_argument("--raw", type=Path, help=f"{dataset}'s raw files (default: synthetic rows)")
    parser.add_argument("--synthetic-rows", type=int, default=4000, help="rows of synthetic data without --raw")
    parser.add_argument("--work", type=Path, default=cache_root() / "jobs" / dataset,
                        help="prepared data and results; absolute, since a job runs in a temporary copy of "
                             "its working directory (default: %(default)s)")
    parser.add_argument("--storage", help="Ray Train storage_path (default: WORK/ray)")
    parser.add_argument("--name", default=stage,
                        help="the run: results in WORK/NAME, resume points in STORAGE/NAME (default: %(default)s)")
    if STAGES[stage].start != "none":
        parser.add_argument("--pretrained", type=Path, help="the PA-MLM run directory it starts from (default: WORK/pamlm)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a preset value")
    parser.add_argument("--fail-at-step", type=int, nargs="+", default=[], metavar="N",
                        help="rehearse failures: the last worker kills itself once at each of these steps "
                             "(Ray restarts the workers up to distributed.max_failures times)")
    return parser


def prepared_data(dataset: str, config: Config, raw: Path | None, synthetic_rows: int, work: Path) -> Path:
    """WORK/data: the prepared splits with the encoder's token ids, made once, the preparation on the
    job's Ray cluster (the job's driver runs on the head: it holds no rows)."""
    from cp_dist.data.prepare_ray import prepare_with_ray
    from cp_dist.data.synth import synth
    from cp_dist.data.tokens import ensure_tokenized

    data = work / "data"
    if not (data / "meta.json").is_file():
        if raw is None:
            raw = work / "raw"
            print(f"no --raw: writing {synthetic_rows:,} synthetic rows in {dataset}'s raw format to {raw}")
            synth(dataset, synthetic_rows, raw)
        prepare_with_ray(dataset, raw, data)
    meta = DatasetMeta.load(data)
    if meta.dataset != dataset:
        raise UserError(f"{data}: holds {meta.dataset}, not {dataset}; pick another --work")
    ensure_tokenized(data, config.prompt.plm, config.prompt.max_length)
    return data


def job_main(stage: str, dataset: str, script: str, argv: list[str] | None = None) -> dict:
    from cp_dist.training.loop import StageJob
    from cp_dist.training.ray_train import run_on_ray

    args = job_parser(stage, dataset, script).parse_args(argv)
    log_progress()
    config = load_config(args.preset, args.set)
    work = args.work.resolve()  # workers run elsewhere: every path they see is absolute
    data = prepared_data(dataset, config, args.raw, args.synthetic_rows, work)
    start = None
    if STAGES[stage].start != "none":
        start = RunDir((args.pretrained or work / "pamlm").resolve()).checkpoint
    run = RunDir(work / args.name)
    storage = args.storage or str(work / "ray")
    distributed = config.distributed
    engine = f"ZeRO-{distributed.zero_stage}" if distributed.engine == "hybrid" else "plain engine"
    print(f"{stage} on {dataset}: preset {args.preset}, {distributed.nproc} workers, {engine}, "
          f"tables {distributed.sharding}; storage {storage}")
    result = run_on_ray(StageJob(stage, data, run.path, config, init_from=start, fail_at_steps=tuple(args.fail_at_step)),
                        storage, args.name)
    summary = f"{stage} finished: {result['steps']} steps, last epoch loss {result['history'][-1]['loss']:.4f}"
    if result["test"] is not None:
        summary += (f", best epoch {result['best_epoch']}: valid AUC {result['valid']['auc']:.4f}, "
                    f"test AUC {result['test']['auc']:.4f}")
    print(f"{summary}\nwrote {run.checkpoint} and {run.metrics_file}")
    return result
