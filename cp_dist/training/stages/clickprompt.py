"""What the stages that train a language model share (ClickPrompt's and the PLM baselines'): text
tokenized for the PLM, the PLM's own learning rate (every PLM parameter, biases and LayerNorm
weights included: the authors' code let some fall back to the optimizer's default), bf16 autocast
on a GPU, optional torch.compile."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cp_dist.config import PRECISIONS, Config
from cp_dist.data.loader import Batch
from cp_dist.data.meta import DatasetMeta
from cp_dist.distributed.engines import Engine
from cp_dist.errors import UserError
from cp_dist.training.stages.base import Stage


def check_text(data_dir: Path, config: Config) -> None:
    """The data's token ids are those of config.prompt.plm's tokenizer."""
    tokenizer = DatasetMeta.load(data_dir).tokenizer
    if tokenizer is None or tokenizer["name"] != config.prompt.plm:
        found = "no pre-tokenized text" if tokenizer is None else f"text tokenized for {tokenizer['name']!r}"
        raise UserError(
            f"{data_dir}: {found}, but prompt.plm is {config.prompt.plm!r}; run "
            f"`cp-dist data tokenize --data {data_dir} --tokenizer {config.prompt.plm} --max-length {config.prompt.max_length}`"
        )


def autocast(device: torch.device, precision: str):
    """bf16 autocast of the forward on a GPU (weights and optimizer states stay fp32); fp32 otherwise.
    Without bf16 matrix units (most CPUs) bf16 would only be slower, so the CPU always runs fp32."""
    assert precision in PRECISIONS, precision
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16" and device.type == "cuda")


def is_plm_parameter(name: str) -> bool:
    """A parameter of the pretrained language model (a masked LM, or P5's encoder-decoder): it trains
    at plm_lr."""
    return ".masked_lm." in f".{name}" or ".seq2seq_lm." in f".{name}"


class LanguageModelStage(Stage):
    reads_text = True

    @classmethod
    def check(cls, config: Config, data_dir: Path, init_from: Path | None) -> None:
        super().check(config, data_dir, init_from)
        check_text(data_dir, config)

    def prepare(self, model: nn.Module) -> None:
        """What the stage trains and freezes."""

    def build_model(self) -> nn.Module:
        model = super().build_model()
        self.prepare(model)
        if self.config.train.compile:
            model.compile_language_side()
        return model

    def learning_rate(self, name: str) -> float:
        return self.settings.plm_lr if is_plm_parameter(name) else self.settings.dense_lr

    def autocast(self):
        return autocast(self.rank.device, self.config.train.precision)

    def logits(self, model: Engine, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.rank.device)
        with self.autocast():
            return model(batch.ids, batch.input_ids, batch.attention_mask).float()

    def loss(self, model: Engine, batch: Batch, step: int) -> torch.Tensor:
        """Stages that score clicks: BCE on the click logit (pretraining stages have their own loss)."""
        return F.binary_cross_entropy_with_logits(self.logits(model, batch), batch.labels.to(self.rank.device))

    def summary(self, model: Engine) -> dict:
        return {"plm_parameters": sum(p.numel() for n, p in model.module.named_parameters() if is_plm_parameter(n))}


class ClickPromptStage(LanguageModelStage):
    architecture = "clickprompt"

    def summary(self, model: Engine) -> dict:
        module = model.module
        return {"generator_parameters": module.generator.num_parameters if module.generator is not None else 0,
                "plm_parameters": sum(p.numel() for p in module.plm_parameters()),
                "plm_fresh_mlm_head": module.fresh_mlm_head}
