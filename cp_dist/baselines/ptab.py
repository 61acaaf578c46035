"""PTab (Liu et al., 2022), a baseline of the paper's Table 2: the language model alone reads the
row text. Masked-LM training on the text of the train and valid rows comes first (no prompts, no ID
model: the ptab_mlm stage, on PA-MLM's budget and masking), then a classifier on the [CLS] state is
finetuned with the PLM (the ptab stage). It scores every row with the PLM, at the PLM's cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cp_dist.config import Config
from cp_dist.ctr.layers import init_linear_layers
from cp_dist.data.meta import FieldMeta
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm


class PTab(nn.Module):
    """The language model and a click head on its [CLS] state."""

    reads_text = True

    def __init__(self, encoder: PromptedEncoder):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.hidden
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                mlm_labels: torch.Tensor | None = None, mlm_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The click logit [B]; with mlm_labels (input_ids then hold the masked text), the MLM loss as
        PA-MLM's (PromptedEncoder.mlm_loss). `ids` are unused: the engines pass every model the ID
        row first, and this one has no ID tables."""
        hidden = self.encoder(input_ids, attention_mask)
        if mlm_labels is not None:
            return self.encoder.mlm_loss(hidden, mlm_labels, mlm_tokens)
        return self.head(hidden[:, 0]).squeeze(-1)

    def compile_language_side(self) -> None:
        self.encoder.compile()


def build_ptab(fields: Sequence[FieldMeta], config: Config, embedding_device: str | None = None,
               lookup_device: torch.device | None = None) -> PTab:
    """The "ptab" architecture (cp_dist.models): config.prompt.plm with a click head."""
    masked_lm, _ = load_masked_lm(config.prompt.plm, config.prompt.plm_layers)
    model = PTab(PromptedEncoder(masked_lm))
    init_linear_layers(model.head, config.train.init)
    return model
