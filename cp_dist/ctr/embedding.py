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
    """`device` is where the tables are created ("meta" defers them to DistributedModelParallel);
    `lookup_device` is where they end up, when that differs from the callers' device (tables in
    host memory under a GPU model): ids go there for the lookup and the embeddings come back."""

    def __init__(self, fields: Sequence[FieldMeta], dim: int, device: torch.device | str | None = None,
                 lookup_device: torch.device | None = None):
        super().__init__()
        self.names = [f.name for f in fields]
        self.dim = dim
        self.lookup_device = lookup_device
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
        lookup_ids = ids if self.lookup_device is None else ids.to(self.lookup_device)
        pooled = self.ebc(field_ids_to_kjt(lookup_ids, self.names)).to_dict()
        return torch.stack([pooled[name] for name in self.names], dim=1).to(ids.device)


class DenseFieldEmbedding(nn.Module):
    """The same lookup as FieldEmbedding for serving: every field's table stacked into one plain
    nn.Embedding, each field's ids shifted by its offset. With one id per bag, sum pooling is the
    row itself, so the outputs are identical; plain PyTorch exports (torch.export) and runs on any
    device without fbgemm's kernels."""

    def __init__(self, weights: Sequence[torch.Tensor]):
        """weights: each field's table, in field order."""
        super().__init__()
        self.table = nn.Embedding.from_pretrained(torch.cat([w.detach() for w in weights]), freeze=True)
        sizes = torch.tensor([0] + [w.shape[0] for w in weights[:-1]])
        self.register_buffer("offsets", sizes.cumsum(0), persistent=False)

    @classmethod
    def from_tables(cls, embedding: FieldEmbedding) -> DenseFieldEmbedding:
        """From an unsharded FieldEmbedding (e.g. a CTRModel loaded from a checkpoint in one process)."""
        bags = embedding.ebc.embedding_bags
        return cls([bags[name].weight for name in embedding.names])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, F] vocabulary indices -> [B, F, D] field embeddings."""
        return self.table(ids + self.offsets)
