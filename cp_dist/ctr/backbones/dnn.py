"""DNN: an MLP over the concatenated field embeddings."""

import torch

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP


class DNN(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.mlp = MLP(num_fields * dim, config.mlp, config.dropout)
        self.q_dim = self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.mlp(fields.flatten(1))
