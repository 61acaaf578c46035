"""A CTR model: embed -> interact -> q -> logit."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cp_dist.config import Config, CTRConfig
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.ctr.embedding import FieldEmbedding
from cp_dist.ctr.layers import init_linear_layers
from cp_dist.data.meta import FieldMeta


class CTRModel(nn.Module):
    """TorchRec field embeddings, a registered backbone and a linear head.

    `embedding_device="meta"` defers the tables to DistributedModelParallel, which allocates only
    each rank's shards; `lookup_device` is the device they will live on (see FieldEmbedding).
    """

    reads_text = False  # scored from the ids alone

    def __init__(self, fields: Sequence[FieldMeta], config: CTRConfig, embedding_device: str | None = None,
                 lookup_device: torch.device | None = None):
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(fields, config.embedding_dim, embedding_device, lookup_device)
        self.backbone = BACKBONES.lookup(config.model, "ctr.model")(len(fields), config.embedding_dim, config)
        self.head = nn.Linear(self.backbone.q_dim, 1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def interact(self, fields: torch.Tensor) -> torch.Tensor:
        """The representation q that the head scores and ClickPrompt turns into prompts."""
        return self.backbone(fields)

    def logit(self, q: torch.Tensor) -> torch.Tensor:
        return self.head(q).squeeze(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logit(self.interact(self.embed(ids)))


def build_ctr_model(fields: Sequence[FieldMeta], config: Config, embedding_device: str | None = None,
                    lookup_device: torch.device | None = None) -> CTRModel:
    """The "ctr" architecture (cp_dist.models)."""
    model = CTRModel(fields, config.ctr, embedding_device, lookup_device)
    init_linear_layers(model, config.train.init)
    return model
