"""CTR-BERT (Muhamed et al., 2021), a baseline of the paper's Table 2: two text towers, one reading
the user-side fields ("User ID is 90. Age is 60. ...") and one the item-side fields, each a copy of
the language model; their [CLS] states, concatenated, feed an MLP that gives the click logit. No ID
tables. It scores every row with two PLM passes over shorter texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cp_dist.config import Config
from cp_dist.ctr.layers import MLP, init_linear_layers
from cp_dist.data.meta import FieldMeta
from cp_dist.errors import UserError
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm

SIDES = ("user", "item")


class CTRBERT(nn.Module):
    reads_text = True
    text_sides = SIDES  # reads one text per side, not the row text (the ctr_bert stage assembles them)

    def __init__(self, user_tower: PromptedEncoder, item_tower: PromptedEncoder, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.user_tower, self.item_tower = user_tower, item_tower
        self.mlp = MLP(user_tower.hidden + item_tower.hidden, hidden, dropout)
        self.head = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, ids: torch.Tensor, user_ids: torch.Tensor, user_mask: torch.Tensor, item_ids: torch.Tensor,
                item_mask: torch.Tensor) -> torch.Tensor:
        """The click logit [B] from each side's tokens. `ids` are unused: the engines pass every model
        the ID row first, and this one has no ID tables."""
        user = self.user_tower(user_ids, user_mask)[:, 0]
        item = self.item_tower(item_ids, item_mask)[:, 0]
        return self.head(self.mlp(torch.cat([user, item], 1))).squeeze(-1)

    def compile_language_side(self) -> None:
        self.user_tower.compile()
        self.item_tower.compile()

    def unused_parameters(self) -> list[nn.Parameter]:
        """The MLM heads' own layers: the towers only encode."""
        return [*self.user_tower.mlm_head_only_parameters(), *self.item_tower.mlm_head_only_parameters()]


def side_fields(fields: Sequence[FieldMeta]) -> dict[str, list[int]]:
    """Each side's field positions; a data set without a field of either side is an error."""
    sides = {side: [k for k, f in enumerate(fields) if f.side == side] for side in SIDES}
    empty = [side for side, chosen in sides.items() if not chosen]
    if empty:
        raise UserError(f"CTR-BERT reads a user-side and an item-side text; the data has no {empty[0]}-side field "
                        f"(fields: {', '.join(f'{f.name} ({f.side})' for f in fields)})")
    return sides


def build_ctr_bert(fields: Sequence[FieldMeta], config: Config, embedding_device: str | None = None,
                   lookup_device: torch.device | None = None) -> CTRBERT:
    """The "ctr_bert" architecture (cp_dist.models): two copies of config.prompt.plm and an MLP of
    config.ctr.mlp's sizes."""
    side_fields(fields)
    towers = [PromptedEncoder(load_masked_lm(config.prompt.plm, config.prompt.plm_layers)[0]) for _ in SIDES]
    model = CTRBERT(*towers, config.ctr.mlp, config.ctr.dropout)
    init_linear_layers(model.mlp, config.train.init)
    init_linear_layers(model.head, config.train.init)
    return model
