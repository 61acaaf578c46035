"""`cp-dist reproduce`: the tables' blocks, the files a table writes, and runs shared between tables."""

from __future__ import annotations

import json
from pathlib import Path

from cp_dist.config import load_config
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.experiments.paper_tables import TABLES, Scope, format_table, reproduce


def test_blocks_share_the_presets_runs() -> None:
    """Table 2 trains every other backbone in its own block; Table 3's block with the preset's backbone and
    layers has no settings, so it runs in --out itself, where `compare` and the other tables put theirs."""
    config = load_config("ml-100k")  # DCNv2, MiniLM's first layer
    table2 = TABLES["table2"].blocks(config, Scope())
    assert table2[0].settings == () and {"ctrl", "ctr-bert", "ptab", "p5", "clickprompt"} <= set(table2[0].variants)
    assert sorted(b.label() for b in table2[1:]) == sorted(f"model={b}" for b in BACKBONES if b != "dcnv2")
    labels = [b.label() for b in TABLES["table3"].blocks(config, Scope())]
    assert labels[:3] == ["", "plm_layers=3", "plm_layers=6"]
    assert labels[3:6] == ["model=autoint", "model=autoint,plm_layers=3", "model=autoint,plm_layers=6"]
    shallow = [b.label() for b in TABLES["table3"].blocks(config, Scope(plm_layers=(1,)))]  # --plm-layers 1
    assert shallow == ["", "model=autoint", "model=dnn"], "the depth the preset has adds no setting"
    assert [b.label() for b in TABLES["table4"].blocks(config, Scope(plm_layers=(1,)))] == shallow
    some = Scope(plm_layers=(3,), backbones=("dcnv2", "autoint"))  # --plm-layers 3 --backbones dcnv2 autoint
    assert [b.label() for b in TABLES["table3"].blocks(config, some)] == ["plm_layers=3", "model=autoint,plm_layers=3"]


def test_tables_write_their_files_and_share_runs(setup, tmp_path: Path) -> None:
    base, settings = setup
    config = load_config("ml-1m", [*settings, "pamlm.max_steps=3", "finetune.max_steps=4"])
    out, results = tmp_path / "runs", tmp_path / "results"
    table6 = reproduce("table6", base / "data", out, config, seeds=[0], results_dir=results, progress=lambda _: None)
    assert [row["variant"] for row in table6["blocks"][0]["rows"]] == ["ctr", "clickprompt"]
    for suffix in ("json", "md", "png"):
        assert (results / f"table6.{suffix}").stat().st_size > 0
    assert json.loads((results / "table6.json").read_text())["blocks"] == table6["blocks"]
    markdown = (results / "table6.md").read_text()
    assert "| preset | 0 | clickprompt |" in markdown and "user tail, item tail" in markdown and "value gap" in markdown

    # A table grows: blocks that an earlier call measured (same data and preset) and this one did not run are kept.
    earlier = json.loads((results / "table6.json").read_text())
    deeper = {**earlier["blocks"][0], "block": "plm_layers=3", "settings": ["prompt.plm_layers=3"]}
    (results / "table6.json").write_text(json.dumps({**earlier, "blocks": [deeper, *earlier["blocks"]]}))
    said = []
    again = reproduce("table6", base / "data", out, config, seeds=[0], results_dir=results, progress=said.append)
    assert [block["block"] for block in again["blocks"]] == ["plm_layers=3", ""] and "kept from" in said[-1]
    assert "| plm_layers=3 | 0 | clickprompt |" in (results / "table6.md").read_text()
    # as a run resumes: a table written before cp_dist gained a setting, or with another evaluation batch, is kept
    older = json.loads(json.dumps({**earlier, "blocks": [deeper, *earlier["blocks"]]}))
    del older["config"]["train"]["log_every_seconds"]
    older["config"]["prompt"]["eval_batch_size"] = 512
    (results / "table6.json").write_text(json.dumps(older))
    assert [b["block"] for b in reproduce("table6", base / "data", out, config, seeds=[0], results_dir=results,
                                          progress=lambda _: None)["blocks"]] == ["plm_layers=3", ""]
    # seeds belong to blocks (their rows record them): a block kept keeps its own, one run again takes this call's
    def seeded(block: dict, seeds: list[int]) -> dict:  # as a run over `seeds` would record it
        return {**block, "rows": [{**row, "seeds": seeds, "test_auc": row["test_auc"][:1] * len(seeds)} for row in block["rows"]]}

    (results / "table6.json").write_text(json.dumps({**older, "blocks": [seeded(deeper, [0, 2]), seeded(earlier["blocks"][0], [0, 5])]}))
    said = []
    grown = reproduce("table6", base / "data", out, config, seeds=[0], results_dir=results, progress=said.append)
    assert [(b["block"], b["rows"][0]["seeds"]) for b in grown["blocks"]] == [("plm_layers=3", [0, 2]), ("", [0])]
    assert grown["seeds"] == [0, 2] and json.loads((results / "table6.json").read_text())["seeds"] == [0, 2]
    assert any("had seeds 5 too" in line for line in said), "a block run again with fewer seeds says which it lost"
    markdown = (results / "table6.md").read_text()
    assert "| plm_layers=3 | 0, 2 | clickprompt |" in markdown and "| preset | 0 | clickprompt |" in markdown
    other = {**earlier, "config": {**earlier["config"], "ctr": {**earlier["config"]["ctr"], "model": "dnn"}}}
    (results / "table6.json").write_text(json.dumps({**other, "blocks": [deeper, *earlier["blocks"]]}))
    assert [b["block"] for b in reproduce("table6", base / "data", out, config, seeds=[0], results_dir=results,
                                          progress=lambda _: None)["blocks"]] == [""], "another preset: replaced"

    stamp = (out / "seed0" / "clickprompt" / "metrics.json").stat().st_mtime_ns
    table5 = reproduce("table5", base / "data", out, config, seeds=[0], results_dir=results, progress=lambda _: None)
    rows = {row["variant"]: row for row in table5["blocks"][0]["rows"]}
    assert rows["clickprompt"]["test_auc"] == table6["blocks"][0]["rows"][1]["test_auc"]
    assert (out / "seed0" / "clickprompt" / "metrics.json").stat().st_mtime_ns == stamp, "Table 6's run is reused"
    assert {"ablation-no-prompts-mlm", "ablation-no-pamlm", "ablation-no-prompts"} <= set(rows)
    assert "w/o both: ablation-no-prompts" in (results / "table5.md").read_text()


def test_table_baseline_is_over_each_blocks_seeds() -> None:
    """'vs table baseline' compares a block's mean with the first block's backbone on the same seeds; a
    block over seeds the first one lacks gets '–', not the seeds' difference shown as the model's."""
    def block(label: str, seeds: list[int], aucs: list[float]) -> dict:
        row = {"variant": "ctr", "seeds": seeds, "test_auc": aucs, "test_logloss": [0.5] * len(aucs),
               "test_auc_mean": sum(aucs) / len(aucs), "relative_auc_change_mean": 0.0, "seconds": [1.0] * len(aucs),
               "long_tail": [{"long_tail_user": True, "long_tail_item": True, "rows": 10, "auc": 0.7}]}
        return {"block": label, "rows": [row], "long_tail_thresholds": {"user": 5, "item": 3}}

    result = {"title": "T", "data": "D", "note": "", "config": load_config("ml-100k").to_dict(),
              "blocks": [block("", [1, 0], [0.70, 0.80]), block("model=dnn", [0], [0.84]), block("model=fm", [1], [0.84]),
                         block("model=ipnn", [2], [0.5])]}
    lines = {line.split(" | ")[0]: line.split(" | ") for line in format_table(result).splitlines() if line.startswith("| ")}
    assert lines["| preset"][6] == "+0.00%"
    assert lines["| model=dnn"][6] == "+5.00%", "against the first block's seed 0 (0.80), not its mean (0.75)"
    assert lines["| model=fm"][6] == "+20.00%", "seed 1 is the first block's first AUC (0.70)"
    assert lines["| model=ipnn"][6] == "–"
    assert "paper AUC" not in format_table(result), "no paper column outside Table 2 on the paper's data"

    # Table 2 on ML-1M: each backbone alone and each variant of the preset's block beside the paper's figure
    blocks = [{**b, "backbone": backbone} for b, backbone in zip(result["blocks"], ("dcnv2", "dnn", "fm", "ipnn"))]
    blocks[0]["rows"].append({**blocks[0]["rows"][0], "variant": "clickprompt-no-plm"})
    text = format_table({**result, "table": "table2", "dataset": "ml-1m", "blocks": blocks})
    cells = {(row[0], row[2]): row[-2:] for row in ([c.strip() for c in line.strip("|").split("|")]
                                                   for line in text.splitlines() if line.count("|") > 12)}
    assert cells["preset", "ctr"] == ["0.8439", "-0.0939"], "DCNv2's 0.75 against the paper's 0.8439"
    assert cells["preset", "clickprompt-no-plm"] == ["0.8467", "-0.0967"]
    assert cells["model=dnn", "ctr"] == ["0.8413", "-0.0013"]
