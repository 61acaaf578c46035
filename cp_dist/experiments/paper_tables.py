"""The paper's Tables 2 to 6 on one data set (`cp-dist reproduce TABLE`), each as blocks of the
comparison (cp_dist.experiments.comparison): a block is a set of variants under some settings, e.g.
"AutoInt with MiniLM's first 3 layers". Each block runs as `cp-dist compare` would, in
OUT/<block>/ (the block with the preset's own settings in OUT itself, so a table reuses the runs of
an earlier `compare` or of another table in the same OUT). Finished runs are reused and unfinished
ones resume, so an interrupted table goes on where it stopped.

A table writes <table>.json, <table>.md and <table>.png (test AUC, mean and std over seeds) into
the results directory. Each row's relative AUC change and tests are against its block's baseline,
the block's CTR backbone alone on the same seeds. Seeds belong to blocks: a block run again takes
the call's seeds and figures, and the blocks a call did not run keep theirs, so a costly table gains
seeds block by block. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cp_dist.config import Config, with_overrides
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.experiments.published import table2_figures
from cp_dist.io import atomic_file, write_json
from cp_dist.plots import new_figure, save_figure
from cp_dist.runs import RESUMABLE_CHANGES, first_difference

MAIN = ("ctr", "clickprompt-no-plm", "clickprompt")
TABLE3_DEPTHS = (1, 3, 6)  # MiniLM's first 1, 3 and all 6 layers
PER_BACKBONE = ("dcnv2", "autoint", "dnn")  # Tables 3 and 4's backbones, the paper's


@dataclass(frozen=True)
class Scope:
    """The part of a table to run: Table 3's encoder depths, Tables 3 and 4's backbones (subsets
    where a whole table costs too much; the blocks left out keep their earlier figures)."""
    plm_layers: tuple[int, ...] = TABLE3_DEPTHS
    backbones: tuple[str, ...] = PER_BACKBONE


@dataclass(frozen=True)
class Block:
    settings: tuple[str, ...]  # `section.key=value` overrides of the table's preset
    variants: tuple[str, ...]  # cp_dist.experiments.variants

    def label(self) -> str:
        """The block's folder and name: its settings as key=value (empty for the preset's own)."""
        return ",".join(s.partition(".")[2].replace(" ", "") for s in self.settings)


@dataclass(frozen=True)
class PaperTable:
    title: str
    blocks: Callable[[Config, Scope], list[Block]]  # of the preset's config
    note: str = ""


def _table2(config: Config, scope: Scope) -> list[Block]:
    others = [Block((f"ctr.model={name}",), ("ctr",)) for name in BACKBONES if name != config.ctr.model]
    return [Block((), (*MAIN, "ctrl", "ctr-bert", "ptab", "p5")), *others]


def _per_backbone(variants: tuple[str, ...], *, over_depths: bool = False) -> Callable[[Config, Scope], list[Block]]:
    """Blocks for each backbone asked for (and, over_depths, each encoder depth asked for)."""
    def blocks(config: Config, scope: Scope) -> list[Block]:
        chosen = []
        for name in scope.backbones:
            for count in scope.plm_layers if over_depths else (None,):
                settings = (f"ctr.model={name}",) + (() if count is None else (f"prompt.plm_layers={count}",))
                chosen.append(Block(_changed(config, settings), variants))
        return chosen

    return blocks


def _changed(config: Config, settings: tuple[str, ...]) -> tuple[str, ...]:
    """The settings that change the preset (the block with none shares the preset's runs)."""
    kept = []
    for setting in settings:
        section, _, rest = setting.partition(".")
        key, _, value = rest.partition("=")
        if str(getattr(getattr(config, section), key)) != value:
            kept.append(setting)
    return tuple(kept)


TABLES: dict[str, PaperTable] = {
    "table2": PaperTable(
        "Table 2: the ten CTR backbones, the four PLM baselines and ClickPrompt without and with the PLM", _table2,
        "P5 answers 'Clicked?' with the MLM head at a [MASK] for an encoder PLM, by decoding for an encoder-decoder "
        "(the paper's T5); CTR-BERT, PTab and P5 score with the PLM, CTRL and ClickPrompt without the PLM at the "
        "backbone's cost."),
    "table3": PaperTable(
        "Table 3: compatibility, backbones DCNv2 / AutoInt / DNN x the PLM's encoder layers (MiniLM's first 1, 3, 6; --plm-layers)",
        _per_backbone(MAIN, over_depths=True)),
    "table4": PaperTable(
        "Table 4: prompts at the input layer only against layer-wise prompts, with the PLM",
        _per_backbone(("ctr", "ablation-input-prompts", "clickprompt"))),
    "table5": PaperTable(
        "Table 5: ClickPrompt without prompts (late fusion, the PLM's masked-LM pretraining kept), without PA-MLM, "
        "and without both",
        lambda config, scope: [Block((), ("ctr", "clickprompt", "ablation-no-prompts-mlm", "ablation-no-pamlm",
                                   "ablation-no-prompts"))],
        "w/o prompt: ablation-no-prompts-mlm (the PLM masked-LM trained on the row text without prompts, then the "
        "towers fused late); w/o pretrain: ablation-no-pamlm; w/o both: ablation-no-prompts."),
    "table6": PaperTable(
        "Table 6: test AUC by long-tail user x long-tail item, DCNv2 against ClickPrompt",
        lambda config, scope: [Block((), ("ctr", "clickprompt"))]),
}


def reproduce(name: str, data_dir: Path, out_dir: Path, config: Config, *, seeds: Sequence[int], results_dir: Path,
              scope: Scope = Scope(), progress: Callable[[str], None] = print) -> dict:
    """Runs the blocks of table `name` in `scope` and writes <name>.json / .md / .png to results_dir."""
    from cp_dist.data.meta import DatasetMeta
    from cp_dist.experiments.comparison import run_comparison

    table = TABLES[name]
    blocks = []
    for block in table.blocks(config, scope):
        label = block.label()
        progress(f"[{name}] block {label or '(the preset)'}: {', '.join(block.variants)}")
        block_config = with_overrides(config, list(block.settings))
        block_dir = out_dir / label if label else out_dir
        payload = run_comparison(data_dir, block_dir, block_config, seeds=seeds, variants=block.variants,
                                 results_dir=block_dir, progress=progress)
        blocks.append({"block": label, "settings": list(block.settings), "backbone": payload["baseline"],
                       "rows": payload["rows"], "long_tail_thresholds": payload["long_tail_thresholds"]})
    result = {"table": name, "title": table.title, "note": table.note, "data": str(data_dir),
              "dataset": DatasetMeta.load(data_dir).dataset, "config": config.to_dict(), "blocks": blocks}
    result = _with_earlier_blocks(result, results_dir / f"{name}.json", progress)
    result["seeds"] = sorted({seed for block in result["blocks"] for seed in _block_seeds(block)})
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json(results_dir / f"{name}.json", result)
    with atomic_file(results_dir / f"{name}.md") as tmp:
        tmp.write_text(format_table(result))
    plot_table(result, results_dir / f"{name}.png")
    return result


def _with_earlier_blocks(result: dict, path: Path, progress: Callable[[str], None]) -> dict:
    """The result plus the blocks of the table already at `path` that this call did not run, where
    that table comes from the same data and preset: a table grows block by block (Table 3 one encoder
    depth at a time, a costly block one more seed at a time) instead of each call erasing the blocks
    the others measured. A block run again replaces its earlier figures in place, whatever its earlier
    seeds; new blocks follow the earlier ones."""
    if not path.is_file():
        return result
    earlier = json.loads(path.read_text())
    same = ("data", "config")
    # as a run resumes: settings that do not change results, or that cp_dist gained later, do not count
    if first_difference({key: earlier.get(key) for key in same}, {key: result[key] for key in same}, RESUMABLE_CHANGES):
        progress(f"replacing {path}: its data or preset differ from this run's")
        return result
    fresh = {block["block"]: block for block in result["blocks"]}
    kept = [block["block"] for block in earlier["blocks"] if block["block"] not in fresh]
    for block in earlier["blocks"]:
        dropped = sorted(set(_block_seeds(block)) - set(_block_seeds(fresh.get(block["block"], block))))
        if dropped:  # the runs are still in --out: a call with every seed brings them back
            progress(f"block {block['block'] or '(the preset)'} of {path} had seeds {', '.join(map(str, dropped))} too; "
                     "this call did not run them, so its figures leave them out")
    merged = [fresh.pop(block["block"], block) for block in earlier["blocks"]] + list(fresh.values())
    if kept:
        progress(f"kept from {path}, not run again: {', '.join(label or '(the preset)' for label in kept)}")
    return {**result, "blocks": merged}


def _block_seeds(block: dict) -> list[int]:
    """The seeds a block was run with, which its rows record (tables of every version)."""
    return block["rows"][0]["seeds"]


def _spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"


def _diagnostic(row: dict) -> str:
    """The row's alignment diagnostic, where it has one: PA-MLM's value gap, the masked-value
    cross-entropy of a masked-LM pretraining without prompts (PTab's), CTRL's retrieval, the PLM
    tower's AUC with shuffled prompts."""
    parts = []
    gaps = [g for g in row.get("mlm_value_gap") or [] if g is not None]
    if gaps:
        parts.append(f"value gap {statistics.mean(gaps):.3f}")
    unprompted = [c for c in row.get("mlm_value_ce_none") or [] if c is not None]
    if unprompted and not gaps:
        parts.append(f"masked-value CE {statistics.mean(unprompted):.3f} (no prompts)")
    retrieval = [r for r in row.get("retrieval_at_1") or [] if r is not None]
    if retrieval:
        parts.append(f"retrieval@1 {statistics.mean(retrieval):.3f} (chance {row['retrieval_chance']:.3f})")
    shuffled = [a for a in row.get("auc_plm_shuffled") or [] if a is not None]
    if shuffled:
        parts.append(f"PLM shuffled {statistics.mean(shuffled):.4f}")
    return "; ".join(parts) or "–"


def _scoring_cell(row: dict) -> str:
    """"–": a backbone alone, or a table written before scoring costs were measured."""
    return "–" if row.get("scoring_cost") is None else f"{row['scoring_cost']:.2f}"


def _seeds_cell(block: dict) -> str:
    return ", ".join(map(str, _block_seeds(block)))


def _table_baseline(result: dict, block: dict) -> float | None:
    """The first block's CTR backbone's mean test AUC over `block`'s seeds: a block's mean compared
    with one over other seeds would show the seeds' difference as the model's."""
    first = result["blocks"][0]
    by_seed = dict(zip(_block_seeds(first), first["rows"][0]["test_auc"]))
    if not set(_block_seeds(block)) <= set(by_seed):
        return None
    return statistics.mean(by_seed[seed] for seed in _block_seeds(block))


def _published(result: dict, block: dict, row: dict) -> tuple[float, float] | None:
    """The paper's Table 2 (AUC, LogLoss) of a Table 2 row: a backbone alone (its block's backbone) or
    a variant of the preset's block; None for other tables, data sets and rows."""
    if result.get("table") != "table2" or "backbone" not in block:  # tables written before blocks named theirs
        return None
    name = block["backbone"] if row["variant"] == "ctr" else row["variant"] if not block["block"] else None
    return None if name is None else table2_figures(result.get("dataset", ""), name)


def _published_cells(result: dict, block: dict, row: dict) -> str:
    figures = _published(result, block, row)
    if figures is None:
        return "| – | – "
    return f"| {figures[0]:.4f} | {row['test_auc_mean'] - figures[0]:+.4f} "


def format_table(result: dict) -> str:
    config = result["config"]
    prompt = config["prompt"]
    lines = [f"# {result['title']}", "",
             f"Data {result['data']}; PLM {prompt['plm']} ({prompt['plm_layers'] or 'all'} layers unless the block "
             f"says), max_length {prompt['max_length']}. Test AUC / LogLoss mean ± std over the block's seeds (a block "
             "gains seeds when `cp-dist reproduce` runs it again with more; the others keep theirs). Relative change, "
             "p (t) (paired t-test across seeds) and p (DeLong) (seed-mean AUC difference on the same test rows) are "
             "against the block's CTR backbone alone. vs table baseline: the mean AUC's relative change against the "
             "first block's CTR backbone on the same seeds (Table 2: every backbone against the preset's; '–' where that "
             "block lacks some of them). seconds: training, including the pretraining run the variant starts from. "
             "scoring x: the served model's time to score the first test rows relative to the block's CTR backbone's "
             "(the first seed's models, in turns, on this machine's CPU; cp_dist.experiments.scoring_cost).",
             ""]
    if result["note"]:
        lines += [result["note"], ""]
    published = any(_published(result, block, row) for block in result["blocks"] for row in block["rows"])
    if published:
        lines += ["paper AUC: the published Table 2 (RoBERTa-base as the PLM; cp_dist.experiments.published); "
                  "ours − paper: our mean test AUC less it.", ""]
    lines += ["| block | seeds | variant | test AUC | test LogLoss | rel. AUC change | vs table baseline | p (t) "
              "| p (DeLong) | diagnostic | seconds | scoring x |" + (" paper AUC | ours − paper |" if published else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if published else "")]
    for block in result["blocks"]:
        baseline = _table_baseline(result, block)
        for row in block["rows"]:
            t = f"{row['p_value']:.3f}" if "p_value" in row else "–"
            delong = f"{row['delong']['p_value']:.3g}" if "delong" in row else "–"
            versus_table = "–" if baseline is None else f"{100 * (row['test_auc_mean'] - baseline) / baseline:+.2f}%"
            lines.append(f"| {block['block'] or 'preset'} | {_seeds_cell(block)} | {row['variant']} | {_spread(row['test_auc'])} | "
                         f"{_spread(row['test_logloss'])} | {100 * row['relative_auc_change_mean']:+.2f}% | {versus_table} | "
                         f"{t} | {delong} | {_diagnostic(row)} | {statistics.mean(row['seconds']):.0f} | {_scoring_cell(row)} "
                         + (_published_cells(result, block, row) if published else "") + "|")
    first = result["blocks"][0]
    cells = first["rows"][0]["long_tail"]
    thresholds = first["long_tail_thresholds"]
    lines += ["", f"Test AUC by long-tail user x long-tail item (block {first['block'] or 'preset'}), mean over seeds "
              f"{_seeds_cell(first)}. Long "
              f"tail: ids seen at most {thresholds['user']} (users) / {thresholds['item']} (items) times in training, or never.",
              "", "| variant | " + " | ".join(f"user {'tail' if c['long_tail_user'] else 'head'}, item "
                                             f"{'tail' if c['long_tail_item'] else 'head'} ({c['rows']:,} rows)" for c in cells) + " |",
              "|---|" + "---|" * len(cells)]
    for row in first["rows"]:
        lines.append(f"| {row['variant']} | " + " | ".join("–" if c["auc"] is None else f"{c['auc']:.4f}" for c in row["long_tail"]) + " |")
    return "\n".join(lines) + "\n"


def plot_table(result: dict, path: Path) -> None:
    """Test AUC (mean, std over seeds as error bars): a group of bars per block, labelled with its seed
    count (a block of one seed has an error bar of 0), a colour per variant."""
    blocks = result["blocks"]
    variants = list(dict.fromkeys(row["variant"] for block in blocks for row in block["rows"]))
    figure, axis = new_figure(width=max(6.0, 0.3 * sum(len(block["rows"]) for block in blocks) + 0.4 * len(blocks) + 3),
                              height=5)
    tops, bottoms, labelled = [], [], set()
    for b, block in enumerate(blocks):
        rows = block["rows"]
        bar = min(0.3, 0.8 / len(rows))
        for i, row in enumerate(rows):
            mean, std = row["test_auc_mean"], row["test_auc_std"]
            colour = f"C{variants.index(row['variant']) % 10}"
            label = None if row["variant"] in labelled else row["variant"]
            labelled.add(row["variant"])
            axis.bar(b + (i - (len(rows) - 1) / 2) * bar, mean, bar, yerr=std, capsize=2, color=colour, label=label)
            tops.append(mean + std)
            bottoms.append(mean - std)
    counts = [len(_block_seeds(block)) for block in blocks]
    ticks = [f"{block['block'] or 'preset'} ({count} seed{'s' if count > 1 else ''})" for block, count in zip(blocks, counts)]
    axis.set_xticks(range(len(blocks)), ticks, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(max(0.0, min(bottoms) - 0.01), max(tops) + 0.005)
    axis.set_ylabel("test AUC")
    axis.set_title(result["title"], fontsize=9)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(figure, path)
