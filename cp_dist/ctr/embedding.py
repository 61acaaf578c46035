"""The ID features as TorchRec embedding tables: one table per field.

One table per field because field vocabularies differ by orders of magnitude (3 genders, 800K
users): the planner then places and shards each table by its own size, and a table is the unit
that row-wise or column-wise sharding splits. Each field holds exactly one id per row, so every
bag has length one and sum pooling returns that id's embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from cp_dist.data.meta import FieldMeta


def field_ids_to_kjt(ids: torch.Tensor, names: Sequence[str]) -> KeyedJaggedTensor:
    """[B, F] ids -> a KeyedJaggedTensor with one key per field and one value per (field, row)."""
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(names),
        values=ids.t().reshape(-1),
        lengths=torch.ones(ids.numel(), dtype=torch.int32, device=ids.device),
    )


class FieldEmbedding(nn.Module):
    def __init__(self, fields: Sequence[FieldMeta], dim: int, device: torch.device | str | None = None):
        super().__init__()
        self.names = [f.name for f in fields]
        self.dim = dim
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=f.name, embedding_dim=dim, num_embeddings=f.vocab_size,
                    feature_names=[f.name], pooling=PoolingType.SUM,
                )
                for f in fields
            ],
            device=torch.device(device) if device is not None else None,
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, F] vocabulary indices -> [B, F, D] field embeddings."""
        pooled = self.ebc(field_ids_to_kjt(ids, self.names)).to_dict()
        return torch.stack([pooled[name] for name in self.names], dim=1)
