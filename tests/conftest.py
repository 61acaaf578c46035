"""Shared fixtures: real ML-100K (fetched once per machine), synthetic raw files per format, and a tiny
ClickPrompt setting for the training tests: synthetic ML-1M rows and a random 2-layer BERT that shares
MiniLM's vocabulary, so the real tokenizer and masking run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.data.fetch import cache_root, fetch_raw
from cp_dist.data.prepare import prepare
from cp_dist.data.synth import synth
from cp_dist.data.tokens import tokenize_splits
from cp_dist.plm.encoder import masked_lm_from_config
from cp_dist.pretrained import load_tokenizer


@pytest.fixture(scope="session")
def ml100k_raw() -> Path:
    return fetch_raw("ml-100k", cache_root())


@pytest.fixture(scope="session")
def ml100k_prepared(ml100k_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml100k") / "prepared"
    prepare("ml-100k", ml100k_raw, out)
    return out


@pytest.fixture
def make_synth(tmp_path: Path):
    """make_synth(format, rows) -> raw directory with synthetic files and synth_truth.json."""

    def make(fmt: str, rows: int = 4000, seed: int = 0) -> Path:
        out = tmp_path / f"{fmt}-raw"
        synth(fmt, rows, out, seed=seed)
        return out

    return make


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def planted(setup, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """Synthetic ML-1M rows (10,000 ratings; 758 test rows) tokenized for the tiny random BERT: the
    planted-signal tests of the baselines."""
    base, _ = setup
    data = tmp_path_factory.mktemp("planted")
    truth = synth("ml-1m", 10_000, data / "raw", seed=1)
    prepare("ml-1m", data / "raw", data / "data")
    tokenize_splits(data / "data", str(base / "tiny-bert"), max_length=48)
    return data / "data", truth["oracle_auc"]
