"""A tiny ClickPrompt setting shared by the training tests: synthetic ML-1M rows and a random
2-layer BERT that shares MiniLM's vocabulary, so the real tokenizer and masking run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.config import Config
from cp_dist.data.prepare import prepare
from cp_dist.data.synth import synth
from cp_dist.data.tokens import tokenize_splits
from cp_dist.plm.encoder import masked_lm_from_config
from cp_dist.pretrained import load_tokenizer
from cp_dist.runs import RunDir
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train


@pytest.fixture(scope="package")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("clickprompt")
    plm = base / "tiny-bert"
    tokenizer = load_tokenizer("minilm")
    masked_lm_from_config("bert", vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0).save_pretrained(plm)  # no dropout: runs compare step by step
    tokenizer.save_pretrained(plm)
    synth("ml-1m", 2500, base / "raw")
    prepare("ml-1m", base / "raw", base / "data")
    tokenize_splits(base / "data", str(plm), max_length=48)
    settings = [f"prompt.plm={plm}", "prompt.max_length=48", "prompt.num_prompts=2", "ctr.mlp=[32]", "ctr.cross_layers=1",
                "pamlm.global_batch_size=128", "finetune.global_batch_size=128", "finetune.epochs=1", "train.epochs=1",
                "ctrl.diagnose_rows=128"]
    return base, settings


@pytest.fixture(scope="package")
def planted(setup, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """Synthetic ML-1M rows (10,000 ratings; 758 test rows) tokenized for the tiny random BERT: the
    planted-signal tests of the baselines."""
    base, _ = setup
    data = tmp_path_factory.mktemp("planted")
    truth = synth("ml-1m", 10_000, data / "raw", seed=1)
    prepare("ml-1m", data / "raw", data / "data")
    tokenize_splits(data / "data", str(base / "tiny-bert"), max_length=48)
    return data / "data", truth["oracle_auc"]


def run(stage: str, data: Path, out: Path, config: Config, start: Path | None = None) -> dict:
    """Trains a stage into run directory `out` (from the run directory `start`'s checkpoint) and returns its metrics."""
    return train(StageJob(stage, data, out, config, init_from=RunDir(start).checkpoint if start else None))
