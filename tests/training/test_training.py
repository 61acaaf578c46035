"""PA-MLM and both finetuning modes end to end, with a tiny random BERT that shares MiniLM's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from sklearn.metrics import roc_auc_score

from cp_dist.cli import main
from cp_dist.config import load_config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.checkpoint import load_model
from cp_dist.distributed.process_group import RankInfo
from cp_dist.errors import UserError
from cp_dist.training.evaluate import predict
from cp_dist.training.stages import STAGES
from tests.helpers import run


def _tensors(path: Path, prefix: str) -> dict[str, np.ndarray]:
    with safe_open(str(path), framework="np") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}


def test_pretrain_then_both_finetunings(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", settings)
    summary = run("pamlm", base / "data", tmp_path / "pre", config)
    meta = DatasetMeta.load(base / "data")
    train_valid = meta.splits["train"]["rows"] + meta.splits["valid"]["rows"]
    assert summary["steps"] == train_valid // 128, "one epoch over train + valid, never test"
    assert np.isfinite(summary["history"][0]["loss"]) and summary["model_info"]["plm_fresh_mlm_head"] is False
    assert "mlm_value_gap" in summary["valid"] and summary["test"] is None and summary["best_epoch"] == 0

    with_plm = run("with_plm", base / "data", tmp_path / "with", config, start=tmp_path / "pre")
    assert with_plm["model_info"]["fusion_weight"] != 0.5, "the fusion weight trains"
    predictions = pq.read_table(tmp_path / "with" / "test_predictions.parquet")["probability"].to_numpy()
    labels = pq.read_table(base / "data" / "test.parquet")["label"].to_numpy()
    assert with_plm["test"]["auc"] == pytest.approx(roc_auc_score(labels, predictions), abs=1e-6)

    without = run("without_plm", base / "data", tmp_path / "without", config, start=tmp_path / "pre")
    # The served model is exactly the plain backbone: same parameters, and a plain CTRModel
    # loaded from its checkpoint reproduces its test AUC.
    plain = CTRModel(meta.fields, config.ctr)
    load_model(plain, tmp_path / "without" / "checkpoint")
    plain.eval()
    index = json.loads((tmp_path / "without" / "checkpoint" / "checkpoint.json").read_text())
    dense = _tensors(tmp_path / "without" / "checkpoint" / "dense.safetensors", "")
    assert set(dense) | set(index["tables"]) == set(plain.state_dict()), "exactly the backbone's parameters, nothing of the PLM"
    assert index["architecture"] == "ctr" and sum(p.numel() for p in plain.parameters()) == sum(
        v.size for v in dense.values()) + sum(rows * cols for rows, cols in index["tables"].values())
    scores = predict(lambda b: plain(b.ids), SplitLoader(base / "data", "test", global_batch_size=4096))
    assert abs(roc_auc_score(labels, scores) - without["test"]["auc"]) < 1e-5

    # `cp-dist evaluate` rebuilds both finetuned runs from their checkpoints alone.
    for directory, metrics in ((tmp_path / "with", with_plm), (tmp_path / "without", without)):
        assert main(["evaluate", "--run", str(directory), "--data", str(base / "data")]) == 0
        assert abs(json.loads((directory / "eval_test.json").read_text())["auc"] - metrics["test"]["auc"]) < 1e-5
    assert main(["evaluate", "--run", str(tmp_path / "pre"), "--data", str(base / "data")]) == 2, "PA-MLM has no click head"

    # `cp-dist diagnose` rebuilds the runs alone and finds what training measured on the same rows.
    assert main(["diagnose", str(tmp_path / "pre"), "--data", str(base / "data"), "--rows", str(config.pamlm.diagnose_rows)]) == 0
    diagnosis = json.loads((tmp_path / "pre" / "diagnose.json").read_text())
    assert diagnosis["mlm_value_gap"] == pytest.approx(summary["valid"]["mlm_value_gap"], abs=1e-4)
    assert diagnosis["mlm_value_ce_own"] == pytest.approx(summary["valid"]["mlm_value_ce_own"], rel=1e-4)
    assert main(["diagnose", str(tmp_path / "with"), "--data", str(base / "data")]) == 0
    towers = json.loads((tmp_path / "with" / "diagnose.json").read_text())
    for key in ("auc_fused", "auc_ctr", "auc_plm", "auc_plm_shuffled"):
        assert towers[key] == pytest.approx(with_plm["test"][key], abs=1e-5)
    assert towers["auc_fused"] == pytest.approx(with_plm["test"]["auc"], abs=1e-5)
    assert main(["diagnose", str(tmp_path / "without"), "--data", str(base / "data")]) == 2, "no prompts to diagnose"


def test_without_plm_starts_from_the_pretrained_ctr_model(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", settings)
    run("pamlm", base / "data", tmp_path / "pre", config)
    meta = DatasetMeta.load(base / "data")
    started = CTRModel(meta.fields, config.ctr)
    load_model(started, tmp_path / "pre" / "checkpoint", source_prefix="ctr.", keep=("head.",))
    saved = _tensors(tmp_path / "pre" / "checkpoint" / "dense.safetensors", "ctr.backbone.")
    for name, value in started.backbone.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), saved[f"ctr.backbone.{name}"])


def test_plm_learning_rate_zero_freezes_the_plm_and_nothing_else(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", [*settings, "finetune.plm_lr=0"])
    run("pamlm", base / "data", tmp_path / "pre", config)
    run("with_plm", base / "data", tmp_path / "frozen", config, start=tmp_path / "pre")
    before = _tensors(tmp_path / "pre" / "checkpoint" / "dense.safetensors", "")
    after = _tensors(tmp_path / "frozen" / "checkpoint" / "dense.safetensors", "")
    encoder = [k for k in before if k.startswith("encoder.masked_lm.bert.")]
    assert any("LayerNorm" in k for k in encoder) and any(k.endswith("bias") for k in encoder)
    assert all(np.array_equal(before[k], after[k]) for k in encoder), "every PLM weight, biases and norms included"
    assert not np.array_equal(before["generator.output.weight"], after["generator.output.weight"])
    assert not np.array_equal(before["ctr.backbone.mlp.0.weight"], after["ctr.backbone.mlp.0.weight"])


def test_text_must_match_the_language_model(setup, tmp_path: Path) -> None:
    base, settings = setup
    with pytest.raises(UserError, match="text tokenized for .*tiny-bert.*prompt.plm is 'minilm'.*cp-dist data tokenize"):
        run("pamlm", base / "data", tmp_path / "pre", load_config("ml-1m", [*settings, "prompt.plm=minilm"]))


@pytest.mark.slow
def test_compiled_steps_match_eager(setup, tmp_path: Path) -> None:
    """train.compile changes the speed of PA-MLM and finetuning with the PLM, not their numbers."""
    base, settings = setup
    losses = {}
    for compiled in (False, True):
        config = load_config("ml-1m", [*settings, "pamlm.max_steps=3", f"train.compile={str(compiled).lower()}"])
        pretrained = run("pamlm", base / "data", tmp_path / f"pre-{compiled}", config)
        finetuned = run("with_plm", base / "data", tmp_path / f"with-{compiled}", config, start=tmp_path / f"pre-{compiled}")
        losses[compiled] = pretrained["history"][0]["step_losses"] + finetuned["history"][0]["step_losses"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    cpu = torch.device("cpu")
    for stage in ("pamlm", "with_plm"):
        model = STAGES[stage](config, DatasetMeta.load(base / "data"), RankInfo(0, 1, cpu, "gloo", cpu)).build_model()
        assert model.encoder._compiled_call_impl is not None and model.generator._compiled_call_impl is not None


def test_models_that_read_the_text_evaluate_in_smaller_batches(setup) -> None:
    """Evaluation batches are train.eval_batch_size rows, at most prompt.eval_batch_size for a model
    that reads the text (the PLM's activations for 8192 rows of MiniLM's 6 layers exhaust 23 GB)."""
    base, settings = setup
    config = load_config("ml-1m", [*settings, "train.eval_batch_size=96", "prompt.eval_batch_size=40"])
    meta, cpu = DatasetMeta.load(base / "data"), torch.device("cpu")
    sizes = {}
    for name in ("ctr", "with_plm"):
        stage = STAGES[name](config, meta, RankInfo(0, 1, cpu, "gloo", cpu))
        sizes[name] = len(next(iter(stage.batches(base / "data", "valid", training=False))))
    assert sizes == {"ctr": 96, "with_plm": 40}
    with pytest.raises(UserError, match="prompt.eval_batch_size 40 is not divisible by train.logical_shards 16"):
        STAGES["with_plm"].check(load_config("ml-1m", [*settings, "train.eval_batch_size=96", "prompt.eval_batch_size=40",
                                                       "train.logical_shards=16", "finetune.global_batch_size=128"]),
                                 base / "data", None)
    # each stage checks the evaluation batch it uses: a text model never reads train.eval_batch_size rows at once
    uneven = load_config("ml-1m", [*settings, "train.eval_batch_size=100", "prompt.eval_batch_size=32", "train.logical_shards=16",
                                   "finetune.global_batch_size=128", "train.global_batch_size=128"])
    STAGES["with_plm"].check(uneven, base / "data", None)
    with pytest.raises(UserError, match="train.eval_batch_size 100 is not divisible by train.logical_shards 16"):
        STAGES["ctr"].check(uneven, base / "data", None)
