"""What scoring costs each variant's served model, measured side by side on this machine.

The paper's trade-off is quality against serving cost: CTR-BERT, PTab, P5 and ClickPrompt with the PLM
run the language model for every row scored, while ClickPrompt without the PLM and CTRL serve a plain
CTR model. A comparison quotes each variant's cost relative to its CTR backbone: the models are rebuilt
from their checkpoints, and each scores the whole test split in turn, round after round, so that the
load of a shared machine falls on all of them alike. The figure is this machine's (one process, the
CPU); perf/bench_serve.py measures serving latency, on a GPU too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from cp_dist.checkpoint import rebuild
from cp_dist.config import Config
from cp_dist.data.loader import Batch
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.process_group import RankInfo
from cp_dist.runs import RunDir
from cp_dist.training.stages import STAGES

ROUNDS = 3


def served_scorer(run_dir: Path, data_dir: Path, split: str = "test") -> tuple[Callable[[Batch], torch.Tensor], list[Batch]]:
    """The click-logit function of a finished run's model, rebuilt from its checkpoint in this process
    and scored the way its stage scores (CTR-BERT assembles a text per side), and the split's
    evaluation batches, read into memory so that a timing leaves out the reading."""
    meta = DatasetMeta.load(data_dir)
    model, index = rebuild(RunDir(run_dir).checkpoint, meta.fields)
    config = Config.from_dict(index["config"], f"{run_dir} checkpoint")
    cpu = torch.device("cpu")
    stage = STAGES.lookup(index["stage"], f"{run_dir} checkpoint: stage")(config, meta, RankInfo(0, 1, cpu, "gloo", cpu))
    return (lambda batch: stage.logits(model, batch)), list(stage.batches(data_dir, split, training=False))


@torch.no_grad()
def scoring_seconds_per_1k_rows(runs: Mapping[str, Path], data_dir: Path, rounds: int = ROUNDS) -> dict[str, float]:
    """Each run's seconds to score 1,000 rows of the test split: the median over `rounds` passes, the
    runs taking turns within each round."""
    scorers = {name: served_scorer(run, data_dir) for name, run in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (score, batches) in scorers.items():
            start = time.perf_counter()
            for batch in batches:
                score(batch)
            seconds[name].append(time.perf_counter() - start)
    rows = {name: sum(int(batch.valid.sum()) for batch in batches) for name, (_, batches) in scorers.items()}
    return {name: 1000 * statistics.median(seconds[name]) / rows[name] for name in runs}
