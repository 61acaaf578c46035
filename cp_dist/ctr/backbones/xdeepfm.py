"""xDeepFM (Lian et al. 2018): linear part, Compressed Interaction Network and an MLP."""

import torch
from torch import nn

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP


class CIN(nn.Module):
    """Each layer forms all (previous map, raw field) outer products per dimension and compresses
    them with a 1x1 convolution; every layer's maps are sum-pooled over the embedding dimension."""

    def __init__(self, num_fields: int, layer_sizes: list[int]):
        super().__init__()
        sizes = [num_fields, *layer_sizes]
        self.convs = nn.ModuleList(nn.Conv1d(sizes[k] * num_fields, sizes[k + 1], 1) for k in range(len(layer_sizes)))
        self.out_dim = sum(layer_sizes)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, _, dim = fields.shape
        hidden, pooled = fields, []
        for conv in self.convs:
            outer = torch.einsum("bhd,bmd->bhmd", hidden, fields).reshape(batch, -1, dim)
            hidden = conv(outer)
            pooled.append(hidden.sum(dim=2))
        return torch.cat(pooled, dim=1)


class XDeepFM(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.cin = CIN(num_fields, config.cin_layers)
        self.mlp = MLP(num_fields * dim, config.mlp, config.dropout)
        self.q_dim = num_fields * dim + self.cin.out_dim + self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        flat = fields.flatten(1)
        return torch.cat([flat, self.cin(fields), self.mlp(flat)], dim=1)
