"""Embedding-table state that does not depend on how the tables are sharded.

Every piece of table state is addressed in full-table coordinates (row and column offsets), so
the same code initialises shards, saves them and loads them into any other sharding or world
size, or into a plain single-process model.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from cp_dist.runs import block_key

INIT_BLOCK_ROWS = 4096


@dataclass
class TableBlock:
    """A rectangle of one table held by this rank: a view into the live weights."""

    table: str  # state-dict key of the full table
    tensor: torch.Tensor
    row: int
    col: int
    replicated: bool  # the full table on every rank (unsharded or data-parallel)
    table_shape: tuple[int, int]  # (rows, columns) of the full table


def is_table(key: str) -> bool:
    return ".embedding_bags." in key and key.endswith(".weight")


def table_blocks(model: nn.Module, table_prefix: str = "") -> Iterator[TableBlock]:
    """table_prefix: where `model` sits in the full model when it holds only the tables (the hybrid engine)."""
    for key, value in model.state_dict().items():
        if not is_table(key):
            continue
        shape = tuple(value.size())
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                row, col = shard.metadata.shard_offsets
                yield TableBlock(table_prefix + key, shard.tensor, row, col, replicated=False, table_shape=shape)
        else:
            yield TableBlock(table_prefix + key, value, 0, 0, replicated=True, table_shape=shape)


def initial_values(table: str, shape: tuple[int, int], rows: slice, cols: slice, seed: int, std: float) -> torch.Tensor:
    """N(0, std) values of table[rows, cols], a function of (seed, table, row) alone.

    Rows are generated full-width in blocks of INIT_BLOCK_ROWS, each block from its own seed, so
    any rectangle (a row-wise, column-wise or table-wise shard) gets the same values the whole
    table would hold there, and a rank generates only the blocks its shard touches.
    """
    table_seed = zlib.crc32(table.encode()) ^ (seed * 0x9E3779B1 & 0xFFFFFFFF)
    first, last = rows.start // INIT_BLOCK_ROWS, (rows.stop - 1) // INIT_BLOCK_ROWS
    generated = [
        torch.randn(INIT_BLOCK_ROWS, shape[1], generator=torch.Generator().manual_seed(table_seed * 1_000_003 + index))
        for index in range(first, last + 1)
    ]
    offset = rows.start - first * INIT_BLOCK_ROWS
    return torch.cat(generated)[offset : offset + rows.stop - rows.start, cols] * std


@torch.no_grad()
def initialize_tables(model: nn.Module, seed: int, std: float, table_prefix: str = "") -> None:
    """Writes initial_values() into every table block this rank holds: identical for every sharding."""
    for block in table_blocks(model, table_prefix):
        rows, cols = block.tensor.shape
        block.tensor.copy_(
            initial_values(block.table, block.table_shape, slice(block.row, block.row + rows),
                           slice(block.col, block.col + cols), seed, std)
        )


def save_table_state(model: nn.Module, path: Path) -> None:
    """This rank's table shards and their fused optimizer's state (e.g. row-wise Adagrad's
    accumulators), keyed by name and shard offsets: a resume point for the same world size and plan."""
    state = {"weight:" + block_key(b.table, b.row, b.col): b.tensor for b in table_blocks(model)}
    for name, value in table_optimizer_tensors(model.fused_optimizer.state_dict()):
        state[f"optimizer:{name}"] = value
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


@torch.no_grad()
def load_table_state(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no table state for this rank; resume with the world size the run was saved with")
    optimizer_state = model.fused_optimizer.state_dict()
    with safe_open(str(path), framework="pt") as handle:
        wanted = {"weight:" + block_key(b.table, b.row, b.col): b.tensor for b in table_blocks(model)}
        wanted |= {f"optimizer:{name}": value for name, value in table_optimizer_tensors(optimizer_state)}
        missing = set(wanted) - set(handle.keys())
        if missing:
            raise ValueError(f"{path}: no {sorted(missing)[0]}; it was saved with another world size or sharding plan")
        for key, tensor in wanted.items():
            tensor.copy_(handle.get_tensor(key))
    model.fused_optimizer.load_state_dict(optimizer_state)


def table_optimizer_tensors(optimizer_state: dict) -> Iterator[tuple[str, torch.Tensor]]:
    """This rank's shards of the state tensors in a fused table optimizer's state_dict()."""
    for parameter, states in optimizer_state["state"].items():
        for name, value in states.items():
            if isinstance(value, ShardedTensor):
                for shard in value.local_shards():  # e.g. row-wise Adagrad's accumulators: one value per row
                    yield f"{parameter}.{name}@{','.join(map(str, shard.metadata.shard_offsets))}", shard.tensor
            elif isinstance(value, torch.Tensor):
                yield f"{parameter}.{name}", value
