"""AutoInt (Song et al. 2019): multi-head self-attention across fields, with residual projections."""

import torch
from torch import nn

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone


class InteractingLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, heads: int):
        super().__init__()
        self.project = nn.Linear(in_dim, out_dim, bias=False)
        self.attention = nn.MultiheadAttention(out_dim, heads, bias=False, batch_first=True)
        self.residual = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        projected = self.project(fields)
        attended, _ = self.attention(projected, projected, projected, need_weights=False)
        return torch.relu(attended + self.residual(fields))


class AutoInt(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        sizes = [dim] + [config.attention_dim] * config.attention_layers
        self.layers = nn.Sequential(
            *(InteractingLayer(sizes[k], sizes[k + 1], config.attention_heads) for k in range(config.attention_layers))
        )
        self.q_dim = num_fields * sizes[-1]

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.layers(fields).flatten(1)
