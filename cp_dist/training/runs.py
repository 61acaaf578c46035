"""A finished run, rebuilt from its checkpoint alone (config and weights), in one plain process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from cp_dist.clickprompt.model import ClickPrompt
from cp_dist.config import Config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.errors import DataError
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.tables import INDEX_FILE, load_model
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm
from cp_dist.training.evaluate import evaluate
from cp_dist.training.loop import CHECKPOINT_DIR


def load_run(run_dir: Path, meta: DatasetMeta) -> tuple[torch.nn.Module, Callable[[Batch], torch.Tensor], bool]:
    """(model, click-logit function, whether it reads text) for a train-ctr or finetune run."""
    index_path = run_dir / CHECKPOINT_DIR / INDEX_FILE
    if not index_path.is_file():
        raise DataError(f"{index_path}: not found; expected a run directory of `cp-dist train-ctr` or `cp-dist finetune`")
    index = json.loads(index_path.read_text())
    if index.get("stage") == "pretrain":
        raise DataError(f"{run_dir}: a PA-MLM checkpoint has no click head; finetune it first")
    config = Config.from_dict(index["config"], str(index_path))
    ctr = CTRModel(meta.fields, config.ctr)
    if index.get("stage") == "finetune_with_plm":
        model = ClickPrompt(ctr, PromptedEncoder(load_masked_lm(config.prompt.plm, config.prompt.plm_layers)[0]), config.prompt)
        load_model(model, run_dir / CHECKPOINT_DIR)
        return model.eval(), lambda b: model(b.ids, b.input_ids, b.attention_mask), True
    load_model(ctr, run_dir / CHECKPOINT_DIR)
    return ctr.eval(), lambda b: ctr(b.ids), False


def evaluate_run(run_dir: Path, data_dir: Path, split: str, batch_size: int = 4096) -> dict[str, float]:
    meta = DatasetMeta.load(data_dir)
    _, score, text = load_run(run_dir, meta)
    return evaluate(score, SplitLoader(data_dir, split, global_batch_size=batch_size, text=text), torch.device("cpu"))
