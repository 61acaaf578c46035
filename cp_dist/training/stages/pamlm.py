"""PA-MLM: the CTR model prompts the PLM, which recovers the row's masked text (train + valid rows,
never test). Everything the MLM loss reaches trains: tables, backbone, generator, PLM, MLM head."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from cp_dist.clickprompt.diagnostics import diagnostic_sample, mlm_diagnostics
from cp_dist.clickprompt.masking import TokenMasker
from cp_dist.clickprompt.model import prepare_for_pretraining
from cp_dist.config import Config
from cp_dist.data.loader import Batch
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.engines import Engine
from cp_dist.distributed.process_group import RankInfo
from cp_dist.errors import UserError
from cp_dist.pretrained import load_tokenizer
from cp_dist.training.stages.clickprompt import ClickPromptStage


class PAMLM(ClickPromptStage):
    name = "pamlm"
    description = "prompt-augmented masked-LM pretraining: the CTR model's prompts help the PLM recover masked text"
    section = "pamlm"
    selects_on_valid = False
    scores_clicks = False

    def __init__(self, config: Config, meta: DatasetMeta, rank: RankInfo):
        super().__init__(config, meta, rank)
        self.tokenizer = load_tokenizer(config.prompt.plm)
        self.masker = TokenMasker(self.tokenizer, seed=config.train.seed, probability=self.settings.mask_probability,
                                  width=meta.tokenizer["max_length"],  # the longest text the data can hold
                                  unit=self.settings.masking, num_fields=len(meta.fields),
                                  maskable=maskable_fields(self.settings.mask_fields, meta))

    @property
    def train_splits(self) -> tuple[str, ...]:
        return self.training_splits(self.config)

    @classmethod
    def training_splits(cls, config: Config) -> tuple[str, ...]:
        return tuple(config.pamlm.splits)

    @classmethod
    def check(cls, config: Config, data_dir: Path, init_from: Path | None) -> None:
        super().check(config, data_dir, init_from)
        if not config.pamlm.splits or not set(config.pamlm.splits) <= {"train", "valid"}:
            raise UserError(f"pamlm.splits {config.pamlm.splits}: expected train, valid or both (never test)")
        maskable_fields(config.pamlm.mask_fields, DatasetMeta.load(data_dir))
        if config.pamlm.mask_fields and config.pamlm.masking != "fields":
            raise UserError(f"pamlm.mask_fields {config.pamlm.mask_fields} needs pamlm.masking: fields (got {config.pamlm.masking!r})")
        if cls.architecture == "clickprompt" and config.prompt.num_prompts < 1:
            raise UserError("PA-MLM aligns the CTR model with the PLM through prompts: prompt.num_prompts must be at least 1")

    def prepare(self, model: nn.Module) -> None:
        prepare_for_pretraining(model)
        self.mlm_head_only = {id(p) for p in model.mlm_head_only_parameters()}

    def parameter_groups(self, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> list[dict]:
        """As every stage's, but the MLM head's own layers at pamlm.mlm_head_lr: a fresh head (MiniLM
        ships none) has to learn before its gradients tell the prompts anything."""
        named = list(named_parameters)
        head = [(n, p) for n, p in named if id(p) in self.mlm_head_only]
        groups = super().parameter_groups((n, p) for n, p in named if id(p) not in self.mlm_head_only)
        if self.settings.mlm_head_lr is None:
            return groups + super().parameter_groups(head)
        return groups + [{**group, "lr": self.settings.mlm_head_lr} for group in super().parameter_groups(head)]

    def validate(self, model: Engine, data_dir: Path) -> dict[str, float]:
        """The alignment diagnostics (cp_dist.clickprompt.diagnostics) on the first pamlm.diagnose_rows
        valid rows, the same rows every time."""
        sample = diagnostic_sample(data_dir, self.settings.diagnose_rows, self.rank.rank, self.rank.world_size)
        return mlm_diagnostics(model, sample, self.tokenizer, self.rank.device, self.autocast)

    def loss(self, model: Engine, batch: Batch, step: int) -> torch.Tensor:
        """This rank's slice, masked as the whole global batch would be (TokenMasker), recovered
        under the row's prompts. Ranks mask different numbers of tokens: each divides its summed
        cross-entropy by the global count / world size, so that the mean over ranks (of losses,
        and of gradients as data-parallel training averages them) is the mean over every masked
        token of the global batch, whatever the world size."""
        rank = self.rank
        masked, labels = self.masker(batch.input_ids, step, first_row=rank.rank * len(batch),
                                     global_rows=len(batch) * rank.world_size, token_fields=batch.token_fields)
        batch, labels = batch.to(rank.device), labels.to(rank.device)
        tokens = (labels != -100).sum().float()
        if rank.world_size > 1:
            dist.all_reduce(tokens)
        with self.autocast():
            return model(batch.ids, masked.to(rank.device), batch.attention_mask, mlm_labels=labels,
                         mlm_tokens=tokens / rank.world_size)


def maskable_fields(names: list[str], meta: DatasetMeta) -> list[int] | None:
    """The indices of pamlm.mask_fields in the data's fields (None: every field may be masked)."""
    if not names:
        return None
    known = [f.name for f in meta.fields]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"pamlm.mask_fields: unknown field(s) {', '.join(unknown)}; the data has {', '.join(known)}")
    return [known.index(name) for name in names]
