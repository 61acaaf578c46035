"""The interface every backbone implements."""

from __future__ import annotations

import torch
from torch import nn

from cp_dist.config import CTRConfig


class Backbone(nn.Module):
    """Feature interactions: field embeddings [B, F, D] -> representation q [B, q_dim].

    q is what the CTR head turns into a logit and what ClickPrompt turns into prompts.
    """

    q_dim: int

    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__()
        self.num_fields, self.dim = num_fields, dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
