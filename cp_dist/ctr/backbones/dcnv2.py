"""DCNv2 (Wang et al. 2021), parallel structure: full-rank cross layers
x_{l+1} = x0 * (W_l x_l + b_l) + x_l beside a ReLU MLP; q = [cross output ; MLP output]."""

import torch
from torch import nn

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP


class DCNv2(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        width = num_fields * dim
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers))
        self.mlp = MLP(width, config.mlp, config.dropout)
        self.q_dim = width + self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        x0 = fields.flatten(1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return torch.cat([x, self.mlp(x0)], dim=1)
