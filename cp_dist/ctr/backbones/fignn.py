"""FiGNN (Li et al. 2019): fields as nodes of a fully connected graph. Edge weights come from
attention over node pairs, messages pass through field-specific transforms, and a shared GRU
updates the node states with a residual connection to the embeddings."""

import torch
from torch import nn

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone


class FiGNN(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.steps = config.gnn_steps
        self.edge_attention = nn.Linear(2 * dim, 1, bias=False)
        self.field_transforms = nn.Parameter(torch.eye(dim).repeat(num_fields, 1, 1) + 0.01 * torch.randn(num_fields, dim, dim))
        self.gru = nn.GRUCell(dim, dim)
        self.q_dim = num_fields * dim

    def adjacency(self, fields: torch.Tensor) -> torch.Tensor:
        """[B, F, F] attention weights over the other fields (no self loops)."""
        count = self.num_fields
        pairs = torch.cat([fields.unsqueeze(2).expand(-1, -1, count, -1), fields.unsqueeze(1).expand(-1, count, -1, -1)], -1)
        scores = nn.functional.leaky_relu(self.edge_attention(pairs).squeeze(-1))
        self_loops = torch.eye(count, dtype=torch.bool, device=fields.device)
        return torch.softmax(scores.masked_fill(self_loops, float("-inf")), dim=-1)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, count, dim = fields.shape
        weights = self.adjacency(fields)
        state = fields
        for _ in range(self.steps):
            outgoing = torch.einsum("fde,bfe->bfd", self.field_transforms, state)
            messages = torch.bmm(weights, outgoing)
            state = self.gru(messages.reshape(-1, dim), state.reshape(-1, dim)).view(batch, count, dim) + fields
        return state.flatten(1)
