"""FM (Rendle 2010). The flattened embeddings carry the first-order terms (a linear head over them
is a per-value weight), the bi-interaction vector the second-order ones."""

import torch

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import bi_interaction


class FM(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.q_dim = num_fields * dim + dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return torch.cat([fields.flatten(1), bi_interaction(fields)], dim=1)
