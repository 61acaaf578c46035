"""The one training loop: epochs of steps, evaluation, the selected checkpoint, early stopping,
resume points, and the result. Every stage runs through it, on either engine, in one process, in
local ranks (cp_dist.distributed.process_group.launch) or in Ray Train's workers.

Resume points hold everything a restart needs (the engine's weights and optimizer states, the data
position, each rank's RNG state), so a killed run, run again, ends with the step losses of an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cp_dist.config import Config, StageConfig
from cp_dist.data.loader import Batch
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.engines import Engine, build_engine
from cp_dist.distributed.process_group import RankInfo
from cp_dist.runs import PROGRESS_FILE, RunDir, rng_file
from cp_dist.training.resume import ResumeStore
from cp_dist.training.stages import STAGES
from cp_dist.training.stages.base import Stage


@dataclass(frozen=True)
class StageJob:
    stage: str  # a name in cp_dist.training.stages.STAGES
    data_dir: Path
    out_dir: Path  # the run directory (cp_dist.runs); every rank (every node) must see it
    config: Config
    init_from: Path | None = None  # a start checkpoint, e.g. a PA-MLM run's checkpoint/
    fail_at_steps: tuple[int, ...] = ()  # rehearsals: the last rank SIGKILLs itself once at each of these steps


@dataclass
class Progress:
    """Where training stands; saved with every resume point."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    epoch_losses: list[float] = field(default_factory=list)  # this epoch's global step losses so far
    history: list[dict] = field(default_factory=list)  # finished epochs
    best_epoch: int = -1
    best_valid: dict | None = None
    best_test: dict | None = None  # the test split, scored with the selected checkpoint
    probes: list[dict] = field(default_factory=list)  # mid-epoch evaluations (settings.eval_every_steps)
    seconds: float = 0.0
    done: bool = False
    resumed_at: list[int] = field(default_factory=list)  # global steps this run was resumed from


def global_step_losses(losses: list[torch.Tensor], rank: RankInfo) -> list[float]:
    """Each step's loss over the whole global batch (the mean of the ranks' slice losses)."""
    stacked = torch.stack(losses)
    if rank.world_size > 1:
        dist.all_reduce(stacked)
    return (stacked / rank.world_size).tolist()


def build_stage(name: str, config: Config, meta: DatasetMeta, rank: RankInfo, init_from: Path | None = None,
                total_steps: int = 0) -> tuple[Stage, Engine]:
    """The stage and its model on config.distributed.engine, ready to train (benchmarks step it by
    hand); total_steps: the run's length, for the learning-rate schedule."""
    stage: Stage = STAGES[name](config, meta, rank)
    return stage, engine_for(stage, init_from, total_steps)


def engine_for(stage: Stage, init_from: Path | None = None, total_steps: int = 0) -> Engine:
    """The stage's model, set up on config.distributed.engine."""
    return build_engine(stage.build_model(), stage.config, stage.rank, stage.settings, parameter_groups=stage.parameter_groups,
                        schedule=stage.lr_schedule(total_steps), start=stage.start_from(init_from))


def train_step(stage: Stage, model: Engine, batch: Batch, step: int) -> torch.Tensor:
    """One optimisation step of global step `step`; returns this rank's loss."""
    loss = stage.loss(model, stage.training_batch(batch, step), step)
    model.backward_and_step(loss)
    return loss.detach()


def total_steps(settings: StageConfig, batches_per_epoch: int) -> int:
    return min(settings.epochs * batches_per_epoch, settings.max_steps if settings.max_steps is not None else 1 << 62)


def epoch_length(settings: StageConfig, progress: Progress, batches: int) -> int:
    """The batches this epoch runs: all of them, or fewer where max_steps ends the run within it
    (PA-MLM's 100 steps of a 512-batch epoch), so progress shows the run's real end."""
    if settings.max_steps is None:
        return batches
    return min(batches, progress.batch_in_epoch + max(0, settings.max_steps - progress.global_step))


def run_stage(rank: RankInfo, job: StageJob, store: ResumeStore) -> None:
    """Trains the stage to its end, resuming from the store's latest resume point when there is one;
    writes RUN/checkpoint and RUN/metrics.json."""
    stage: Stage = STAGES[job.stage](job.config, DatasetMeta.load(job.data_dir), rank)
    settings, run = stage.settings, RunDir(job.out_dir)
    train = stage.batches(job.data_dir, stage.train_splits, training=True)
    model = engine_for(stage, job.init_from, total_steps(settings, len(train)))
    progress = Progress()
    with store.latest() as restored:
        if restored is not None:
            progress = _restore(model, restored, rank)
            progress.resumed_at.append(progress.global_step)
            _say(rank, f"resumed from the checkpoint at step {progress.global_step} (epoch {progress.epoch})")
    if progress.done:
        return
    every = job.config.distributed.checkpoint_every_steps
    started = time.perf_counter() - progress.seconds

    def save_resume_point(metrics: dict) -> None:
        progress.seconds = time.perf_counter() - started
        store.save(lambda d: _write_state(model, d, progress, rank), {"global_step": progress.global_step, **metrics})

    pending: list[torch.Tensor] = []
    while not progress.done:
        train.set_epoch(progress.epoch, skip=progress.batch_in_epoch)
        model.train()
        length = epoch_length(settings, progress, len(train))
        batches = tqdm(train, desc=f"{stage.name} epoch {progress.epoch}", initial=progress.batch_in_epoch,
                       total=length, leave=False, disable=None if rank.is_main else True)
        heartbeat = _Heartbeat(f"{stage.name} epoch {progress.epoch}", progress.batch_in_epoch, length,
                               job.config.train.log_every_seconds if rank.is_main and batches.disable else 0.0)
        for batch in batches:
            if settings.max_steps is not None and progress.global_step >= settings.max_steps:
                break
            if progress.global_step in job.fail_at_steps and rank.rank == rank.world_size - 1:
                _rehearse_failure(run, progress.global_step)
            pending.append(train_step(stage, model, batch, progress.global_step))
            progress.batch_in_epoch += 1
            heartbeat.step(progress.batch_in_epoch, pending[-1])
            progress.global_step += 1
            last_step = progress.batch_in_epoch == len(train) or progress.global_step == settings.max_steps
            if settings.eval_every_steps and progress.global_step % settings.eval_every_steps == 0 and not last_step \
                    and not stage.selects_on_valid:
                _probe(stage, model, job, progress, rank)
            if every and progress.global_step % every == 0 and not last_step:  # the epoch's end saves one anyway
                progress.epoch_losses += global_step_losses(pending, rank)
                pending.clear()
                save_resume_point({"epoch": progress.epoch, "loss": progress.epoch_losses[-1]})
        if pending:
            progress.epoch_losses += global_step_losses(pending, rank)
            pending.clear()
        summary = _end_epoch(stage, model, job, progress)
        progress.history.append({**summary, "seconds": time.perf_counter() - started})
        _say(rank, _epoch_line(stage, summary))
        progress.epoch, progress.batch_in_epoch, progress.epoch_losses = progress.epoch + 1, 0, []
        stopped = settings.max_steps is not None and progress.global_step >= settings.max_steps
        progress.done = progress.done or stopped or progress.epoch >= settings.epochs
        if progress.done:  # written before the last resume point: a restart after it finds them in place
            progress.seconds = time.perf_counter() - started
            payload = result(stage, model, progress, job, rank)  # collective (the summary may gather)
            if rank.is_main:
                run.write_metrics(payload)
        save_resume_point({"epoch": summary["epoch"], "loss": summary["loss"],
                           **{f"valid_{k}": v for k, v in summary.get("valid", {}).items()}})


def _end_epoch(stage: Stage, model: Engine, job: StageJob, progress: Progress) -> dict:
    """The epoch's summary. Stages that select on validation AUC keep the best epoch's checkpoint
    (and score the test split with it) and stop after `patience` epochs without improvement;
    the others keep the last epoch's."""
    losses = progress.epoch_losses
    summary = {"epoch": progress.epoch, "steps": len(losses), "loss": sum(losses) / max(1, len(losses)),
               "step_losses": losses}
    model.eval()
    valid = stage.validate(model, job.data_dir)
    if valid is not None:
        summary["valid"] = valid
    improved = not stage.selects_on_valid or progress.best_valid is None or valid["auc"] > progress.best_valid["auc"]
    if improved:
        progress.best_epoch, progress.best_valid = progress.epoch, valid
        _save_model(stage, model, job, progress.epoch)
        if stage.selects_on_valid:
            progress.best_test, probabilities = stage.test(model, job.data_dir)
            if stage.rank.is_main:
                RunDir(job.out_dir).write_predictions(probabilities)
    elif progress.epoch - progress.best_epoch >= stage.settings.patience:
        progress.done = True
    return summary


def _probe(stage: Stage, model: Engine, job: StageJob, progress: Progress, rank: RankInfo) -> None:
    """A mid-epoch evaluation (settings.eval_every_steps), logged and kept in the history."""
    model.eval()
    probe = {"step": progress.global_step, **stage.validate(model, job.data_dir)}
    model.train()
    progress.probes.append(probe)
    _say(rank, f"{stage.name} step {probe['step']}: {_metrics_text(probe)}")


def _metrics_text(metrics: dict) -> str:
    if "auc" in metrics:
        return f"AUC {metrics['auc']:.4f}, LogLoss {metrics['logloss']:.4f}"
    if "mlm_value_gap" in metrics:
        own, shuffled, none = (metrics[f"mlm_value_ce_{k}"] for k in ("own", "shuffled", "none"))
        return (f"masked-value CE {own:.3f} own / {shuffled:.3f} shuffled / {none:.3f} no prompts "
                f"(gap {metrics['mlm_value_gap']:+.3f}), template CE {metrics['mlm_template_ce_own']:.3f}")
    return ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())  # e.g. CTRL's retrieval_at_1


def _epoch_line(stage: Stage, summary: dict) -> str:
    line = f"{stage.name} epoch {summary['epoch']}: {summary['steps']} steps, loss {summary['loss']:.4f}"
    if "valid" in summary:
        line += f"; valid: {_metrics_text(summary['valid'])}"
    return line


class _Heartbeat:
    """Progress lines within an epoch for logs, where tqdm's bar shows nothing: a with-PLM epoch on a
    CPU runs for an hour. Main rank only, from its own losses: no collective, so ranks never wait on it."""

    def __init__(self, what: str, first_batch: int, batches: int, every_seconds: float):
        self.what, self.batches, self.every = what, batches, every_seconds
        self.first_batch, self.started = first_batch, time.perf_counter()
        self.last, self.losses = self.started, []

    def step(self, batch: int, loss: torch.Tensor) -> None:
        if self.every <= 0:
            return
        self.losses.append(loss.detach())
        now = time.perf_counter()
        if now - self.last < self.every or batch == self.batches:  # the epoch's own line follows the last batch
            return
        per_batch = (now - self.started) / (batch - self.first_batch)
        mean_loss = torch.stack(self.losses).float().mean().item()
        print(f"{self.what}: step {batch}/{self.batches}, loss {mean_loss:.4f} (rank 0, since the last line), "
              f"{_minutes(now - self.started)} so far, about {_minutes(per_batch * (self.batches - batch))} left",
              flush=True)
        self.last, self.losses = now, []


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _say(rank: RankInfo, message: str) -> None:
    """Progress for terminals and logs alike (tqdm's bars are for terminals only)."""
    if rank.is_main:
        print(message, flush=True)


def _save_model(stage: Stage, model: Engine, job: StageJob, epoch: int) -> None:
    """The model as it is after `epoch`, to RUN/checkpoint (collective; replaces the previous one atomically)."""
    model.save_model(RunDir(job.out_dir).checkpoint, {
        "architecture": stage.architecture, "stage": stage.name, "scores_clicks": stage.scores_clicks,
        "epoch": epoch, "dataset": stage.meta.dataset, "config": job.config.to_dict()})


def result(stage: Stage, model: Engine, progress: Progress, job: StageJob, rank: RankInfo) -> dict:
    """metrics.json: the same keys for every stage (valid and test are null for stages that do not
    select on validation)."""
    return {
        "stage": stage.name, "dataset": stage.meta.dataset, "model": f"{stage.architecture}+{job.config.ctr.model}",
        "steps": progress.global_step, "rows_seen": progress.global_step * stage.settings.global_batch_size,
        "best_epoch": progress.best_epoch, "valid": progress.best_valid, "test": progress.best_test,
        "history": progress.history, "probes": progress.probes, "train_seconds": progress.seconds, "resumed_at": progress.resumed_at,
        "world_size": rank.world_size, **model.describe(), "model_info": stage.summary(model),
        "init_from": str(job.init_from) if job.init_from else None, "config": job.config.to_dict(),
    }


def _rehearse_failure(run: RunDir, step: int) -> None:
    """This rank dies as a lost node's would (SIGKILL), once per run and step: the step's marker in
    the run directory stops the restarted rank from dying there again."""
    if not run.failure_marker(step).exists():
        run.failure_marker(step).touch()
        os.kill(os.getpid(), signal.SIGKILL)


def _write_state(model: Engine, directory: Path, progress: Progress, rank: RankInfo) -> None:
    """This rank's part of a resume point (collective: every rank calls it)."""
    model.save_state(directory)
    states = {"cpu": torch.get_rng_state()}
    if rank.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(rank.device)
    save_file(states, str(directory / rng_file(rank.rank)))
    if rank.is_main:
        (directory / PROGRESS_FILE).write_text(json.dumps(asdict(progress), indent=2) + "\n")


def _restore(model: Engine, directory: Path, rank: RankInfo) -> Progress:
    model.load_state(directory)
    states = load_file(str(directory / rng_file(rank.rank)))
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], rank.device)
    return Progress(**json.loads((directory / PROGRESS_FILE).read_text()))
