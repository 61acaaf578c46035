"""DeepFM (Guo et al. 2017): FM and an MLP on shared embeddings, side by side."""

import torch

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP, bi_interaction


class DeepFM(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.mlp = MLP(num_fields * dim, config.mlp, config.dropout)
        self.q_dim = num_fields * dim + dim + self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        flat = fields.flatten(1)
        return torch.cat([flat, bi_interaction(fields), self.mlp(flat)], dim=1)
