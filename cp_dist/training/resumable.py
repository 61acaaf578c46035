"""PA-MLM and finetuning with the PLM on the hybrid engine (TorchRec tables + DeepSpeed ZeRO),
checkpointed every N steps and resumable from any checkpoint: dense weights and optimizer states
(DeepSpeed), table shards and their optimizer state (TorchRec), data position, per-rank RNG.

Ray Train's workers run `run_stage` with a RayCheckpoints store (cp_dist.training.ray_jobs);
`launch()` runs it with LocalCheckpoints, in one process or spawned ones. The result goes to the
job's out_dir, a directory every rank can write, laid out like a `cp-dist` run: `checkpoint/`
holds the model (PA-MLM: the final one; finetuning: the epoch with the best validation AUC, written
when it improves) and `metrics.json` the result. Resume points are separate (Ray storage, or
out_dir/resume/ for local runs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cp_dist.clickprompt.masking import TokenMasker
from cp_dist.clickprompt.model import FINETUNE_HEADS
from cp_dist.config import Config
from cp_dist.data.errors import DataError
from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.hybrid import HybridModel, build_hybrid, deepspeed_config
from cp_dist.distributed.process_group import RankInfo, launch
from cp_dist.distributed.sharding import describe_plan
from cp_dist.distributed.tables import INDEX_FILE
from cp_dist.io import atomic_file, replace_dir, write_json
from cp_dist.pretrained import load_tokenizer
from cp_dist.training.clickprompt import (
    check_prompts,
    check_text,
    click_logits,
    click_loss,
    clickprompt_model,
    clickprompt_optimizer,
    pamlm_loss,
)
from cp_dist.training.evaluate import evaluate
from cp_dist.training.loop import CHECKPOINT_DIR, global_step_losses

STAGE_SECTIONS = {"pamlm": "pretrain", "finetune": "finetune"}  # stage -> its config section (and build stage)
PROGRESS_FILE = "progress.json"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"  # what the run in out_dir was started with
FAILED_MARKER = ".failure-rehearsed"
#: Settings a run may change when it is resumed.
RESUMABLE_CHANGES = ("distributed.max_failures", "train.compile")


@dataclass(frozen=True)
class StageJob:
    stage: str  # pamlm | finetune (with the PLM)
    data_dir: Path
    out_dir: Path  # checkpoint/ and metrics.json; shared by all ranks (all nodes)
    config: Config
    init_from: Path | None = None  # finetune: a cp_dist checkpoint directory, e.g. a PA-MLM run's checkpoint/
    fail_at_step: int | None = None  # rehearsal: the last rank SIGKILLs itself once at this step


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    epoch_losses: list[float] = field(default_factory=list)  # this epoch's global step losses so far
    history: list[dict] = field(default_factory=list)  # finished epochs
    best_epoch: int = -1
    best_valid_auc: float = float("-inf")
    seconds: float = 0.0
    done: bool = False
    resumed_at: list[int] = field(default_factory=list)  # global steps this run was resumed from


class Checkpoints(Protocol):
    """Where checkpoints go: every rank writes its own files into `write`'s directory."""

    def latest(self) -> AbstractContextManager[Path | None]: ...

    def save(self, write: Callable[[Path], None], metrics: dict) -> None: ...


class LocalCheckpoints:
    """Checkpoints in root/step-<N>/ on a disk all ranks share; root/LATEST names the newest
    complete one. A checkpoint is staged and renamed once every rank has written its files, so a
    crash mid-write leaves the previous one intact."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = root, keep

    @contextmanager
    def latest(self) -> Iterator[Path | None]:
        pointer = self.root / "LATEST"
        yield self.root / pointer.read_text().strip() if pointer.is_file() else None

    def save(self, write: Callable[[Path], None], metrics: dict) -> None:
        name = f"step-{metrics['global_step']:08d}"
        staging = self.root / f".{name}.staging"
        rank = dist.get_rank()
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        dist.barrier()
        write(staging)
        dist.barrier()
        if rank == 0:
            replace_dir(staging, self.root / name)
            with atomic_file(self.root / "LATEST") as tmp:
                tmp.write_text(name + "\n")
            for old in sorted(self.root.glob("step-*"))[: -self.keep]:
                shutil.rmtree(old)
        dist.barrier()


def _stage_settings(job: StageJob):
    if job.stage not in STAGE_SECTIONS:
        raise ValueError(f"stage {job.stage!r}: expected one of {', '.join(STAGE_SECTIONS)}")
    return getattr(job.config, STAGE_SECTIONS[job.stage])


def check_job(job: StageJob) -> None:
    """Settings that would otherwise fail inside every worker, checked once before any starts."""
    config, settings = job.config, _stage_settings(job)
    deepspeed_config(config, settings.global_batch_size, config.distributed.nproc)  # the ZeRO stage
    if settings.global_batch_size % config.distributed.nproc:
        raise DataError(f"{STAGE_SECTIONS[job.stage]}.global_batch_size {settings.global_batch_size} is not divisible by "
                        f"distributed.nproc {config.distributed.nproc} (each rank takes an equal slice)")
    if job.stage == "pamlm":
        check_prompts(config)
    if job.init_from is not None and not (job.init_from / INDEX_FILE).is_file():
        raise DataError(f"{job.init_from}: no cp_dist checkpoint to start from ({INDEX_FILE} missing); "
                        "finetuning starts from a PA-MLM run's checkpoint/, so run PA-MLM first")
    check_text(job.data_dir, config)
    _check_same_run(job)


def _check_same_run(job: StageJob) -> None:
    """A run directory is resumed only with the settings it was started with; otherwise a rerun
    would silently continue (or return) a different run."""
    started = {"stage": job.stage, "data": str(job.data_dir), "init_from": str(job.init_from) if job.init_from else None,
               "config": job.config.to_dict()}
    for key in RESUMABLE_CHANGES:
        section, name = key.split(".")
        del started["config"][section][name]
    path = job.out_dir / RUN_FILE
    if not path.is_file():
        write_json(path, started)
        return
    then, now = _flat(json.loads(path.read_text())), _flat(started)
    if then != now:
        key = next(k for k in now | then if now.get(k) != then.get(k))
        raise DataError(f"{job.out_dir}: holds a run started with other settings ({key}: {then.get(key)!r} "
                        f"then, {now.get(key)!r} now); resume it as it was, or pick another --name / out_dir")


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def _rehearse_failure(job: StageJob) -> None:
    """This worker dies as a lost node's would (SIGKILL), once per run: the marker in out_dir stops
    the restarted worker from dying again."""
    marker = job.out_dir / FAILED_MARKER
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def build_stage_model(rank: RankInfo, job: StageJob, fields) -> tuple[HybridModel, dict]:
    config, settings = job.config, _stage_settings(job)
    model, info = clickprompt_model(fields, config, rank, stage=STAGE_SECTIONS[job.stage], plm_lr=settings.plm_lr)
    hybrid = build_hybrid(
        model, config, rank, embedding_lr=settings.embedding_lr, global_batch_size=settings.global_batch_size,
        optimizer_for=lambda dense: clickprompt_optimizer(dense, plm_lr=settings.plm_lr, dense_lr=settings.dense_lr,
                                                          weight_decay=settings.weight_decay),
        init_from=job.init_from, keep=FINETUNE_HEADS,
    )
    return hybrid, info


def run_stage(rank: RankInfo, job: StageJob, checkpoints: Checkpoints) -> None:
    """Trains the stage to its end, resuming from checkpoints.latest() when there is one."""
    config, settings = job.config, _stage_settings(job)
    meta = DatasetMeta.load(job.data_dir)
    model, info = build_stage_model(rank, job, meta.fields)
    progress = Progress()
    with checkpoints.latest() as restored:
        if restored is not None:
            progress = _restore(model, restored, rank)
            progress.resumed_at.append(progress.global_step)
            if rank.is_main:
                print(f"resumed from the checkpoint at step {progress.global_step} (epoch {progress.epoch})", flush=True)
    if progress.done:
        return
    per_rank = {"rank": rank.rank, "world_size": rank.world_size, "text": True}
    splits = ["train", "valid"] if job.stage == "pamlm" else "train"
    train = SplitLoader(job.data_dir, splits, global_batch_size=settings.global_batch_size, shuffle=True,
                        seed=config.train.seed, drop_last=True, **per_rank)
    masker = TokenMasker(load_tokenizer(config.prompt.plm), seed=config.train.seed, width=meta.tokenizer["max_length"],
                         probability=getattr(settings, "mask_probability", 0.15))
    max_steps = getattr(settings, "max_steps", None)
    every = config.distributed.checkpoint_every_steps
    precision = config.train.precision
    started = time.perf_counter() - progress.seconds

    def checkpoint(metrics: dict) -> None:
        progress.seconds = time.perf_counter() - started
        checkpoints.save(lambda d: _write_state(model, d, progress, rank), {"global_step": progress.global_step, **metrics})

    pending: list[torch.Tensor] = []
    while progress.epoch < settings.epochs and not progress.done:
        train.set_epoch(progress.epoch, skip=progress.batch_in_epoch)
        model.train()
        batches = tqdm(train, desc=f"{job.stage} epoch {progress.epoch}", initial=progress.batch_in_epoch,
                       total=len(train), leave=False, disable=None if rank.is_main else True)
        for batch in batches:
            if max_steps is not None and progress.global_step >= max_steps:
                break
            if job.fail_at_step == progress.global_step and rank.rank == rank.world_size - 1:
                _rehearse_failure(job)
            if job.stage == "pamlm":
                loss = pamlm_loss(model, masker, batch, progress.global_step, rank, precision)
            else:
                loss = click_loss(model, batch, rank, precision)
            model.backward_and_step(loss)
            pending.append(loss.detach())
            progress.batch_in_epoch += 1
            progress.global_step += 1
            last_step = progress.batch_in_epoch == len(train) or progress.global_step == max_steps
            if every and progress.global_step % every == 0 and not last_step:  # the epoch's end checkpoints anyway
                progress.epoch_losses += global_step_losses(pending, rank)
                pending.clear()
                checkpoint({"epoch": progress.epoch, "loss": progress.epoch_losses[-1]})
        if pending:
            progress.epoch_losses += global_step_losses(pending, rank)
            pending.clear()
        summary = {"epoch": progress.epoch, "steps": len(progress.epoch_losses),
                   "loss": sum(progress.epoch_losses) / max(1, len(progress.epoch_losses)),
                   "step_losses": progress.epoch_losses}
        if job.stage == "finetune":
            model.eval()
            score = lambda b: click_logits(model, b, rank, precision)  # noqa: E731
            summary["valid"] = evaluate(score, _eval_loader(job, "valid", rank), rank.device)
            summary["test"] = evaluate(score, _eval_loader(job, "test", rank), rank.device)  # reported for the best epoch
            if summary["valid"]["auc"] > progress.best_valid_auc:
                progress.best_valid_auc, progress.best_epoch = summary["valid"]["auc"], progress.epoch
                _save_model(model, job, summary["epoch"])
            elif progress.epoch - progress.best_epoch >= settings.patience:
                progress.done = True
        progress.history.append({**summary, "seconds": time.perf_counter() - started})
        progress.epoch, progress.batch_in_epoch, progress.epoch_losses = progress.epoch + 1, 0, []
        stopped = max_steps is not None and progress.global_step >= max_steps
        progress.done = progress.done or stopped or progress.epoch >= settings.epochs
        if progress.done:  # written before the last checkpoint: a restart after it finds them in place
            if job.stage == "pamlm":
                _save_model(model, job, summary["epoch"])
            progress.seconds = time.perf_counter() - started
            result = _result(model, progress, rank, job, info)  # collective under ZeRO-3 (the fusion weight)
            if rank.is_main:
                write_json(job.out_dir / METRICS_FILE, result)
        checkpoint({"epoch": summary["epoch"], "loss": summary["loss"],
                    **({"valid_auc": summary["valid"]["auc"]} if "valid" in summary else {})})


def _eval_loader(job: StageJob, split: str, rank: RankInfo) -> SplitLoader:
    return SplitLoader(job.data_dir, split, global_batch_size=job.config.train.eval_batch_size, rank=rank.rank,
                       world_size=rank.world_size, text=True)


def _write_state(model: HybridModel, directory: Path, progress: Progress, rank: RankInfo) -> None:
    """This rank's part of a checkpoint (collective: every rank calls it)."""
    model.save_state(directory)
    states = {"cpu": torch.get_rng_state()}
    if rank.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(rank.device)
    save_file(states, str(directory / f"rng-rank{rank.rank:05d}.safetensors"))
    if rank.is_main:
        (directory / PROGRESS_FILE).write_text(json.dumps(asdict(progress), indent=2) + "\n")


def _save_model(model: HybridModel, job: StageJob, epoch: int) -> None:
    """The model as it is after `epoch`, to out_dir/checkpoint (collective; replaces the previous one atomically)."""
    stage = "pretrain" if job.stage == "pamlm" else "finetune_with_plm"
    model.save_model(job.out_dir / CHECKPOINT_DIR, {"stage": stage, "epoch": epoch, "config": job.config.to_dict(),
                                                    "dataset": DatasetMeta.load(job.data_dir).dataset})


def _result(model: HybridModel, progress: Progress, rank: RankInfo, job: StageJob, model_info: dict) -> dict:
    meta = DatasetMeta.load(job.data_dir)
    result = {"dataset": meta.dataset, "stage": job.stage, "steps": progress.global_step, "history": progress.history,
              **model_info,
              "train_seconds": progress.seconds, "resumed_at": progress.resumed_at, "world_size": rank.world_size,
              "zero_stage": job.config.distributed.zero_stage, "sharding": describe_plan(model.tables),
              "config": job.config.to_dict()}
    if job.stage == "finetune":
        best = progress.history[progress.best_epoch]
        result |= {"best_epoch": progress.best_epoch, "valid": best["valid"], "test": best["test"],
                   "fusion_weight": _fusion_weight(model)}
    return result


def _fusion_weight(model: HybridModel) -> float:
    import deepspeed

    parameter = model.module.fusion_logit
    with deepspeed.zero.GatheredParameters([parameter], enabled=model.engine.zero_optimization_stage() == 3):
        return float(torch.sigmoid(parameter.detach().float()))


def _restore(model: HybridModel, directory: Path, rank: RankInfo) -> Progress:
    model.load_state(directory)
    states = load_file(str(directory / f"rng-rank{rank.rank:05d}.safetensors"))
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], rank.device)
    return Progress(**json.loads((directory / PROGRESS_FILE).read_text()))


def train_stage(job: StageJob) -> dict:
    """Runs the stage on config.distributed.nproc local ranks (spawned, loopback). out_dir/resume/
    keeps the last resume points, so running it again after a crash resumes; out_dir/checkpoint and
    out_dir/metrics.json are the result."""
    check_job(job)
    launch(_local_rank, job.config.distributed, job, job.out_dir / "resume")
    return json.loads((job.out_dir / METRICS_FILE).read_text())


def _local_rank(rank: RankInfo, job: StageJob, root: Path) -> None:
    run_stage(rank, job, LocalCheckpoints(root))
