"""DCN (Wang et al. 2017): a cross network with vector weights, x_{l+1} = x0 (x_l . w_l) + b_l + x_l,
beside an MLP."""

import torch
from torch import nn

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP


class DCN(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        width = num_fields * dim
        self.weights = nn.Parameter(torch.randn(config.cross_layers, width) / width**0.5)
        self.biases = nn.Parameter(torch.zeros(config.cross_layers, width))
        self.mlp = MLP(width, config.mlp, config.dropout)
        self.q_dim = width + self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        x0 = fields.flatten(1)
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return torch.cat([x, self.mlp(x0)], dim=1)
