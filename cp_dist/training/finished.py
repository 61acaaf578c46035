"""A finished run loaded for scoring: the one way evaluation, diagnostics, serving and the scoring-cost
measure rebuild a run's model.

The model is rebuilt in this process from its checkpoint alone (architecture and config come from the
index, digests verified once) and scored the way its stage scored it in training: the stage builds
the batches (CTR-BERT's its two side texts, the others' the row text where they read it) and turns
a batch into click logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cp_dist.config import Config, with_overrides
from cp_dist.data.loader import Batch, BatchSource
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.checkpoint import read_index, rebuild
from cp_dist.distributed.process_group import RankInfo
from cp_dist.errors import UserError
from cp_dist.runs import RunDir
from cp_dist.training.evaluate import evaluate
from cp_dist.training.stages import STAGES
from cp_dist.training.stages.base import Stage

CPU = torch.device("cpu")


@dataclass
class FinishedRun:
    model: nn.Module  # in eval mode, on the CPU, in one process
    index: dict  # the checkpoint's index (architecture, stage, config)
    stage: Stage  # the stage that trained it, on one CPU rank
    data_dir: Path

    @property
    def reads_text(self) -> bool:
        return self.stage.reads_text

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.stage.logits(self.model, batch)

    def batches(self, split: str) -> BatchSource:
        """The split's evaluation batches, every row once, in row order."""
        return self.stage.batches(self.data_dir, split, training=False)


def load_run(run_dir: Path, data_dir: Path, *, batch_rows: int | None = None, clicks: bool = True) -> FinishedRun:
    """The finished run's model on `data_dir`'s rows, in evaluation batches of its own size (or of
    `batch_rows`). A run without a click head (PA-MLM, say) is refused unless clicks=False."""
    checkpoint = RunDir(run_dir).checkpoint
    index = read_index(checkpoint)
    if clicks and not index.get("scores_clicks", False):
        raise UserError(f"{checkpoint}: a {index.get('stage')} checkpoint has no click head; finetune it first")
    meta = DatasetMeta.load(data_dir)
    model, _ = rebuild(checkpoint, meta.fields, index=index)
    config = Config.from_dict(index["config"], f"{checkpoint} index")
    if batch_rows is not None:
        config = with_overrides(config, [f"train.eval_batch_size={batch_rows}", f"prompt.eval_batch_size={batch_rows}"])
    stage = STAGES.lookup(index["stage"], f"{checkpoint} index: stage")(config, meta, RankInfo(0, 1, CPU, "gloo", CPU))
    return FinishedRun(model, index, stage, data_dir)


def evaluate_run(run_dir: Path, data_dir: Path, split: str) -> dict[str, float]:
    """AUC and LogLoss of a finished run's model on a split, in the run's own evaluation batches."""
    run = load_run(run_dir, data_dir)
    return evaluate(run.logits, run.batches(split), CPU)
