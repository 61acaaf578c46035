"""Building blocks shared by several backbones."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear -> ReLU -> Dropout, per hidden size."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0):
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(in_dim, size), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = size
        super().__init__(*layers)
        self.out_dim = in_dim


def bi_interaction(fields: torch.Tensor) -> torch.Tensor:
    """FM's second-order term before the final sum: 0.5 * ((sum e)^2 - sum e^2), [B, F, D] -> [B, D]."""
    total = fields.sum(dim=1)
    return 0.5 * (total * total - (fields * fields).sum(dim=1))


def pairwise_inner_products(fields: torch.Tensor) -> torch.Tensor:
    """<e_i, e_j> for every pair i < j: [B, F, D] -> [B, F (F - 1) / 2]."""
    rows, cols = torch.triu_indices(fields.shape[1], fields.shape[1], offset=1, device=fields.device)
    return (fields[:, rows] * fields[:, cols]).sum(dim=-1)


def num_pairs(num_fields: int) -> int:
    return num_fields * (num_fields - 1) // 2


INITS = ("xavier", "torch")


@torch.no_grad()
def init_linear_layers(module: nn.Module, scheme: str) -> None:
    """"xavier": every nn.Linear in `module` gets xavier-normal weights and zero biases, as the
    ClickPrompt authors initialise the CTR model and the prompt generator. PyTorch's default (uniform
    weights and non-zero biases) makes the first prompts nearly the same for every row, because the
    biases dominate what a small q contributes. "torch" leaves PyTorch's default in place."""
    if scheme == "torch":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
