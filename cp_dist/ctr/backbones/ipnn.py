"""IPNN (Qu et al. 2016): inner products of every field pair, with the embeddings, into an MLP."""

import torch

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP, num_pairs, pairwise_inner_products


class IPNN(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.mlp = MLP(num_fields * dim + num_pairs(num_fields), config.mlp, config.dropout)
        self.q_dim = self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([fields.flatten(1), pairwise_inner_products(fields)], dim=1))
