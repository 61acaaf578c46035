"""CTRL (Li et al., 2023), a baseline of the paper's Table 2: the CTR model's representation q and
the language model's embedding of the row text are aligned by a contrastive loss, then the CTR
model alone is finetuned (the without_plm stage, as after PA-MLM) and served at the backbone's cost.
The language model only teaches; it is dropped after this pretraining.

Both sides are projected to one space and L2-normalised; row i's text is the positive of row i's
q and every other row's text of the global batch a negative (InfoNCE, both directions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn

from cp_dist.config import Config
from cp_dist.ctr.layers import init_linear_layers
from cp_dist.ctr.model import CTRModel
from cp_dist.data.meta import FieldMeta
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm


class CTRL(nn.Module):
    """The CTR model beside a text encoder, each with a projection into the shared space."""

    reads_text = True

    def __init__(self, ctr: CTRModel, encoder: PromptedEncoder, projection_dim: int):
        super().__init__()
        self.ctr, self.encoder = ctr, encoder
        self.ctr_projection = nn.Linear(ctr.backbone.q_dim, projection_dim)
        self.text_projection = nn.Linear(encoder.hidden, projection_dim)

    def forward(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, 2, projection_dim]: each row's unit vector from the ids and from the text."""
        q = self.ctr.interact(self.ctr.embed(ids))
        hidden = self.encoder(input_ids, attention_mask)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        text = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)  # mean over the text's tokens
        return torch.stack([F.normalize(self.ctr_projection(q), dim=-1),
                            F.normalize(self.text_projection(text), dim=-1)], dim=1)

    def compile_language_side(self) -> None:
        """torch.compile, in place, the text encoder (train.compile)."""
        self.encoder.compile()

    def unused_parameters(self) -> list[nn.Parameter]:
        """The CTR head and the MLM head's own layers: no loss reaches them here."""
        return [*self.ctr.head.parameters(), *self.encoder.mlm_head_only_parameters()]


def contrastive_logits(pairs: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [2B, W * B], targets [2B]) of this rank's B rows (rank r holds rows r*B to (r+1)*B
    of the global batch, as every BatchSource slices it) against the whole global batch: ids ->
    every text, then text -> every ids vector. The gathered vectors keep their gradients (autograd
    all_gather), so the mean of the ranks' losses is the global batch's loss, whatever the world size."""
    rank = 0
    everyone = pairs
    if dist.is_initialized() and dist.get_world_size() > 1:
        rank, everyone = dist.get_rank(), torch.cat(dist_nn.all_gather(pairs))
    targets = torch.arange(len(pairs), device=pairs.device) + rank * len(pairs)
    logits = torch.cat([pairs[:, 0] @ everyone[:, 1].T, pairs[:, 1] @ everyone[:, 0].T]) / temperature
    return logits, torch.cat([targets, targets])


def build_ctrl(fields: Sequence[FieldMeta], config: Config, embedding_device: str | None = None,
               lookup_device: torch.device | None = None) -> CTRL:
    """The "ctrl" architecture (cp_dist.models): the CTR model beside config.prompt.plm."""
    ctr = CTRModel(fields, config.ctr, embedding_device, lookup_device)
    masked_lm, _ = load_masked_lm(config.prompt.plm, config.prompt.plm_layers)
    model = CTRL(ctr, PromptedEncoder(masked_lm), config.ctrl.projection_dim)
    for part in (model.ctr, model.ctr_projection, model.text_projection):
        init_linear_layers(part, config.train.init)
    return model
