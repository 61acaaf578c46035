"""q -> soft prompts: p_{l,k} = g_{l,k}(q), a 2-layer tanh MLP (the paper's section 3).

Like the reference implementation, all (layer, prompt) generators share their first layer and
emit one wide output layer. That output layer dominates the size: hidden x L x K x 2 x H for deep
prompts (about 14M x K parameters for RoBERTa-base, 1.8M x K for MiniLM), so `hidden` is
configurable and `num_parameters` is reported wherever a model is built.
"""

from __future__ import annotations

import torch
from torch import nn

from cp_dist.errors import UserError
from cp_dist.plm.encoder import PromptedEncoder, Prompts

PLACEMENTS = ("deep", "input")


class PromptGenerator(nn.Module):
    def __init__(self, q_dim: int, encoder: PromptedEncoder, num_prompts: int, placement: str = "deep",
                 hidden: int | None = None, input_norm: str = "none"):
        super().__init__()
        if placement not in PLACEMENTS:
            raise UserError(f"prompt.placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
        self.placement, self.num_prompts = placement, num_prompts
        self.layers, self.heads, self.head_dim = encoder.num_layers, encoder.num_heads, encoder.head_dim
        width = hidden or encoder.hidden
        per_prompt = 2 * self.layers * encoder.hidden if placement == "deep" else encoder.hidden
        # the paper's shared first layer, optionally behind a LayerNorm of q (PromptConfig.generator_input_norm)
        norm = [nn.LayerNorm(q_dim)] if input_norm == "layernorm" else []
        self.shared = nn.Sequential(*norm, nn.Linear(q_dim, width), nn.Tanh())
        self.output = nn.Linear(width, num_prompts * per_prompt)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, q: torch.Tensor) -> Prompts:
        flat = self.output(self.shared(q))
        batch = q.shape[0]
        if self.placement == "input":
            return Prompts(vectors=flat.view(batch, self.num_prompts, -1))
        # [B, K, 2, L, heads, head_dim] -> keys and values [L, B, heads, K, head_dim]
        prefix = flat.view(batch, self.num_prompts, 2, self.layers, self.heads, self.head_dim)
        prefix = prefix.permute(2, 3, 0, 4, 1, 5)
        return Prompts(keys=prefix[0], values=prefix[1])
