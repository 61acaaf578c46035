"""What scoring costs each variant's served model, measured side by side on this machine.

The paper's trade-off is quality against serving cost: CTR-BERT, PTab, P5 and ClickPrompt with the PLM
run the language model for every row scored, while ClickPrompt without the PLM and CTRL serve a plain
CTR model. A comparison quotes each variant's cost relative to its CTR backbone: the models are rebuilt
from their checkpoints and score the same first rows of the test split, in batches of the same size,
taking turns round after round so that the load of a shared machine falls on all of them alike. Each
is timed from its batches as its stage reads them (token ids come tokenized; CTR-BERT's time includes
assembling its two texts from them). The figure is this machine's CPU in one process;
perf/bench_serve.py measures serving latency end to end, on a GPU too.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from cp_dist.training.finished import load_run

ROUNDS, ROWS, BATCH_ROWS = 5, 4096, 1024
MIN_SECONDS = 0.25  # a timed round at least this long, so that a scheduler's hiccup weighs little


@torch.no_grad()
def scoring_seconds_per_1k_rows(runs: Mapping[str, Path], data_dir: Path, *, rows: int = ROWS,
                                batch_rows: int = BATCH_ROWS, rounds: int = ROUNDS) -> dict[str, float]:
    """Each run's seconds to score 1,000 rows: the first `rows` rows of the test split in batches of
    `batch_rows`: the fastest of `rounds` rounds after an untimed one (the round least disturbed by
    other work on a shared machine), the runs taking turns within each round."""
    scorers = {}
    for name, run in runs.items():
        loaded = load_run(run, data_dir, batch_rows=batch_rows)
        batches = list(itertools.islice(loaded.batches("test"), math.ceil(rows / batch_rows)))  # read before timing
        scorers[name] = loaded.logits, batches
    per_row: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(1 + rounds):  # round 0 warms up (first calls allocate and dispatch slowly)
        for name, (score, batches) in scorers.items():
            passes, start = 0, time.perf_counter()
            while not passes or time.perf_counter() - start < MIN_SECONDS:  # a cheap model passes again
                for batch in batches:
                    score(batch)
                passes += 1
            if round_:
                per_row[name].append((time.perf_counter() - start) / (passes * sum(len(batch) for batch in batches)))
    return {name: 1000 * min(per_row[name]) for name in runs}
