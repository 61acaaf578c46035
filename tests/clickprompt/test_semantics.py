"""ClickPrompt's model semantics, checked directly: prompts depend on the ID row, the MLM loss alone
trains the CTR tables and backbone through them, the fused logit weighs the CTR tower by a, and each
stage's optimizer groups carry the learning rates and weight decay the config says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cp_dist.config import load_config
from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.checkpoint import read_index
from cp_dist.distributed.process_group import free_loopback_port, process_group, resolve_placement
from cp_dist.distributed.tables import table_blocks
from cp_dist.models import ARCHITECTURES
from cp_dist.training.loop import build_stage
from cp_dist.training.stages import STAGES
from tests.helpers import run


def _model(setup, stage: str = "pamlm", overrides: list[str] = ()):
    """The stage's architecture, unsharded, its tables drawn as training draws them (N(0, 0.01))."""
    base, settings = setup
    config = load_config("ml-1m", [*settings, *overrides])
    torch.manual_seed(0)
    model = ARCHITECTURES[STAGES[stage].architecture](DatasetMeta.load(base / "data").fields, config)
    for block in table_blocks(model):
        block.tensor.data.normal_(0, config.train.embedding_init_std)
    return model, config


def _batch(setup, rows: int = 16):
    base, _ = setup
    return next(iter(SplitLoader(base / "data", "valid", global_batch_size=rows, text=True)))


def test_prompts_change_with_the_id_row(setup) -> None:
    model, _ = _model(setup)
    batch = _batch(setup)
    q = model.ctr.interact(model.ctr.embed(batch.ids))
    prompts = model.generator(q)
    keys = prompts.keys.permute(1, 0, 2, 3, 4).flatten(1)  # [rows, everything]
    assert not torch.allclose(keys[0], keys[1]), "two rows, two different prompts"
    # Measured: 1.84 with xavier weights and zero biases, 0.028 with PyTorch's default Linear init,
    # whose biases dominate what the small initial embeddings contribute.
    spread = (keys - keys.mean(0)).norm(dim=1).mean() / keys.mean(0).norm()
    assert spread > 0.5, f"prompts are {spread:.3f} of their mean apart: nearly one constant prefix"
    again = model.generator(model.ctr.interact(model.ctr.embed(batch.ids.flip(0))))
    torch.testing.assert_close(again.keys, prompts.keys.flip(1))
    # Through the model's own path: the same text read beside other rows' ids reads other prompts.
    _, hidden = model.encode(batch.ids, batch.input_ids, batch.attention_mask)
    _, other = model.encode(batch.ids.flip(0), batch.input_ids, batch.attention_mask)
    assert not torch.allclose(hidden, other), "the text's hidden states do not depend on its row's ids"


def test_the_mlm_loss_alone_trains_tables_and_backbone_through_the_prompts(setup) -> None:
    model, _ = _model(setup)
    batch = _batch(setup)
    labels = torch.where(batch.token_fields >= 0, batch.input_ids, -100)
    masked = torch.where(labels != -100, 103, batch.input_ids)  # [MASK]
    model(batch.ids, masked, batch.attention_mask, mlm_labels=labels).backward()
    tables = [p for n, p in model.named_parameters() if "embedding_bags" in n]
    backbone = list(model.ctr.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone)
    assert sum(float(p.grad.abs().sum()) for p in tables) > 0
    assert model.ctr.head.weight.grad is None, "the click head is not part of PA-MLM"

    model.zero_grad()
    model(batch.ids, masked, batch.attention_mask, mlm_labels=labels, prompts_from="none").backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in backbone), "no prompts, no path to the CTR model"


def test_the_fused_logit_weighs_the_ctr_tower_by_a(setup) -> None:
    model, _ = _model(setup, "with_plm")
    batch = _batch(setup)
    with torch.no_grad():
        model.fusion_logit.fill_(2.0)  # a = 0.881: the CTR tower's weight
        fused, y_ctr, y_plm = model(batch.ids, batch.input_ids, batch.attention_mask, towers=True).unbind(1)
        a = torch.sigmoid(torch.tensor(2.0))
        torch.testing.assert_close(fused, a * y_ctr + (1 - a) * y_plm)
        torch.testing.assert_close(y_ctr, model.ctr(batch.ids))
        torch.testing.assert_close(fused, model(batch.ids, batch.input_ids, batch.attention_mask))
        shuffled = model(batch.ids, batch.input_ids, batch.attention_mask, towers=True, prompts_from="shuffled")
    torch.testing.assert_close(shuffled[:, 1], y_ctr, msg="shuffling prompts leaves the CTR tower alone")
    assert not torch.allclose(shuffled[:, 2], y_plm)


def _groups(setup, stage: str, overrides: list[str], start: Path | None = None) -> tuple[dict, torch.nn.Module]:
    """{parameter name: (lr, weight decay)} of the stage's AdamW, built as training builds it."""
    base, settings = setup
    config = load_config("ml-1m", [*settings, *overrides])
    with process_group(0, 1, resolve_placement(config.distributed), free_loopback_port()) as rank:
        _, engine = build_stage(stage, config, DatasetMeta.load(base / "data"), rank, init_from=start)
        names = {id(p): n for n, p in engine.module.named_parameters()}
        groups = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in engine.optimizer.param_groups for p in g["params"]}
        return groups, engine


def test_pamlm_optimizer_groups(setup) -> None:
    groups, _ = _groups(setup, "pamlm", ["pamlm.plm_lr=2e-5", "pamlm.dense_lr=3e-3", "pamlm.mlm_head_lr=7e-4",
                                         "pamlm.weight_decay=0.05"])
    plm = {n: g for n, g in groups.items() if n.startswith("encoder.masked_lm.bert.")}
    head = {n: g for n, g in groups.items() if n.startswith("encoder.masked_lm.cls.")}
    ctr = {n: g for n, g in groups.items() if n.startswith(("ctr.", "generator."))}
    assert plm and head and ctr and len(plm) + len(head) + len(ctr) == len(groups)
    assert {lr for lr, _ in plm.values()} == {2e-5}, "every PLM parameter, biases and LayerNorm included"
    assert {lr for lr, _ in head.values()} == {7e-4} and {lr for lr, _ in ctr.values()} == {3e-3}
    for name, (_, decay) in groups.items():
        assert decay == (0.0 if name.endswith(("bias", "LayerNorm.weight")) else 0.05), name
    assert not any("embedding_bags" in n for n in groups), "the tables have their own fused optimizer"
    assert not any(n.startswith(("ctr.head.", "plm_head.", "fusion_logit")) for n in groups), "unused in PA-MLM"


def test_finetuning_optimizer_groups_and_a_frozen_plm(setup) -> None:
    groups, _ = _groups(setup, "with_plm", ["finetune.plm_lr=4e-5", "finetune.dense_lr=2e-3", "finetune.weight_decay=0.1"])
    assert groups["fusion_logit"] == (2e-3, 0.0), "the fusion weight is never weight-decayed"
    assert groups["encoder.masked_lm.bert.encoder.layer.0.attention.output.LayerNorm.weight"] == (4e-5, 0.0)
    assert groups["encoder.masked_lm.bert.encoder.layer.0.attention.self.query.weight"] == (4e-5, 0.1)
    assert groups["plm_head.0.weight"] == (2e-3, 0.1) and groups["ctr.head.weight"] == (2e-3, 0.1)
    assert not any(n.startswith("encoder.masked_lm.cls.") for n in groups), "the MLM head is unused when finetuning"
    frozen, _ = _groups(setup, "with_plm", ["finetune.plm_lr=0"])
    assert not any(n.startswith("encoder.masked_lm.") for n in frozen) and "generator.output.weight" in frozen


def test_without_plm_starts_from_the_pamlm_tables_and_backbone(setup, tmp_path: Path) -> None:
    base, settings = setup
    run("pamlm", base / "data", tmp_path / "pre", load_config("ml-1m", [*settings, "pamlm.max_steps=3"]))
    read_index(tmp_path / "pre" / "checkpoint")
    _, engine = _groups(setup, "without_plm", [], start=tmp_path / "pre" / "checkpoint")
    started = {k: v for k, v in engine.model.state_dict().items() if not k.startswith("head.")}
    saved = load_file(str(tmp_path / "pre" / "checkpoint" / "dense.safetensors"))
    tables = load_file(str(tmp_path / "pre" / "checkpoint" / "tables-rank00000.safetensors"))
    for key, value in started.items():
        if "embedding_bags" in key:
            torch.testing.assert_close(value.local_shards()[0].tensor if hasattr(value, "local_shards") else value,
                                       tables[f"ctr.{key}@0,0"], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, saved[f"ctr.{key}"], rtol=0, atol=0)
    assert any("embedding_bags" in k for k in started) and any(k.startswith("backbone.") for k in started)

    # train.start_tables=false: the backbone from PA-MLM, the tables as a fresh run draws them.
    _, fresh = _groups(setup, "without_plm", ["train.start_tables=false"], start=tmp_path / "pre" / "checkpoint")
    _, scratch = _groups(setup, "ctr", [])
    for key, value in fresh.model.state_dict().items():
        if "embedding_bags" in key:
            torch.testing.assert_close(value.local_shards()[0].tensor, scratch.model.state_dict()[key].local_shards()[0].tensor)
        elif key.startswith("backbone."):
            torch.testing.assert_close(value, saved[f"ctr.{key}"], rtol=0, atol=0)


@pytest.mark.parametrize("stage", ["pamlm", "with_plm"])
def test_dense_layers_start_xavier_with_zero_biases(setup, stage: str) -> None:
    model, _ = _model(setup, stage)
    for name, layer in model.named_modules():
        if isinstance(layer, torch.nn.Linear) and not name.startswith("encoder."):
            assert layer.bias is None or layer.bias.abs().sum() == 0, name
    torch_init, _ = _model(setup, stage, ["train.init=torch"])
    assert torch_init.generator.output.bias.abs().sum() > 0
