"""Embedding-table state that does not depend on how the tables are sharded.

Every piece of table state is addressed in full-table coordinates (row and column offsets), so
the same code initialises shards, saves them and loads them into any other sharding or world
size, or into a plain single-process model.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from cp_dist.io import replace_dir

INIT_BLOCK_ROWS = 4096
INDEX_FILE = "checkpoint.json"
DENSE_FILE = "dense.safetensors"


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


def _rank() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


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


def save_model(model: nn.Module, directory: Path, extra: dict | None = None, *, table_prefix: str = "",
               dense_state: dict[str, torch.Tensor] | None = None) -> None:
    """Writes every rank's table blocks and rank 0's dense weights as safetensors. Call on every rank.

    `dense_state` replaces the dense part of model.state_dict() when the tables and the dense layers
    live in different modules (the hybrid engine: `model` holds the tables under `table_prefix`).

    Layout: tables-rank<R>.safetensors (blocks keyed "<table>@<row>,<col>"), dense.safetensors,
    checkpoint.json (table shapes, files, `extra`). Files are staged in a hidden sibling and the
    directory is replaced only once all ranks have written theirs, so every rank must see the same
    directory (one machine, or storage all nodes mount).
    """
    rank, world = _rank()
    staging = directory.parent / f".{directory.name}.staging"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    _barrier()
    blocks = {
        f"{b.table}@{b.row},{b.col}": b.tensor.detach().contiguous().cpu()
        for b in table_blocks(model, table_prefix)
        if not b.replicated or rank == 0
    }
    save_file(blocks, str(staging / f"tables-rank{rank:05d}.safetensors"))
    if rank == 0:
        state = model.state_dict()
        dense_items = dense_state.items() if dense_state is not None else state.items()
        dense, aliases, owner = {}, {}, {}
        for key, value in dense_items:
            if is_table(key):
                continue
            storage = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
            if storage in owner:  # tied weights (e.g. an MLM decoder and the word embeddings): stored once
                aliases[key] = owner[storage]
            else:
                owner[storage] = key
                dense[key] = value.detach().contiguous().cpu()
        save_file(dense, str(staging / DENSE_FILE))
        index = {
            "world_size": world,
            "tables": {table_prefix + k: list(v.size()) for k, v in state.items() if is_table(k)},
            "files": [f"tables-rank{r:05d}.safetensors" for r in range(world)],
            "aliases": aliases,
        }
        (staging / INDEX_FILE).write_text(json.dumps(index | (extra or {}), indent=2) + "\n")
    _barrier()
    if rank == 0:
        replace_dir(staging, directory)
    _barrier()


@torch.no_grad()
def load_model(model: nn.Module, directory: Path, *, source_prefix: str = "", keep: tuple[str, ...] = (),
               table_prefix: str = "", dense: nn.Module | None = None) -> dict:
    """Loads a save_model() directory into a model of any sharding or world size; returns its index.

    source_prefix: where the model sits inside the saved one (e.g. "ctr." to take the CTR model
    out of a PA-MLM checkpoint). keep: prefixes of parameters that stay as they are (fresh heads);
    every other parameter must be in the checkpoint. table_prefix and dense: as in save_model, the
    tables in `model` and the dense weights in `dense` (not yet partitioned by ZeRO).
    """
    index_path = directory / INDEX_FILE
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: not found; expected a checkpoint written by cp_dist")
    index = json.loads(index_path.read_text())
    saved: dict[str, list[tuple[str, int, int, Path]]] = {}
    for name in index["files"]:
        with safe_open(str(directory / name), framework="pt") as handle:
            for key in handle.keys():
                table, _, offsets = key.rpartition("@")
                row, col = map(int, offsets.split(","))
                saved.setdefault(table, []).append((key, row, col, directory / name))
    for block in table_blocks(model, table_prefix):
        source = source_prefix + block.table
        if source not in saved:
            raise KeyError(f"{directory}: no weights for table {source}")
        filled = _fill_block(block, saved[source])
        if filled != block.tensor.numel():
            raise ValueError(f"{directory}: table {block.table} covers {filled} of {block.tensor.numel()} values of this shard")
    state = (dense if dense is not None else model).state_dict()
    with safe_open(str(directory / DENSE_FILE), framework="pt") as handle:
        aliases = index.get("aliases", {})
        sources = {k: aliases.get(source_prefix + k, source_prefix + k) for k in state if not is_table(k) and not k.startswith(keep)}
        missing = set(sources.values()) - set(handle.keys())
        if missing:
            raise KeyError(f"{directory / DENSE_FILE}: missing {sorted(missing)[:3]}")
        for key, source in sources.items():
            state[key].copy_(handle.get_tensor(source))
    return index


def _fill_block(block: TableBlock, pieces: list[tuple[str, int, int, Path]]) -> int:
    rows, cols = block.tensor.shape
    filled = 0
    for key, row, col, path in pieces:
        with safe_open(str(path), framework="pt") as handle:
            piece = handle.get_slice(key)
            piece_rows, piece_cols = piece.get_shape()
            r0, r1 = max(row, block.row), min(row + piece_rows, block.row + rows)
            c0, c1 = max(col, block.col), min(col + piece_cols, block.col + cols)
            if r0 >= r1 or c0 >= c1:
                continue
            values = piece[r0 - row : r1 - row, c0 - col : c1 - col]
            block.tensor[r0 - block.row : r1 - block.row, c0 - block.col : c1 - block.col].copy_(values)
            filled += (r1 - r0) * (c1 - c0)
    return filled


def save_table_state(model: nn.Module, path: Path) -> None:
    """This rank's table shards and their fused optimizer's state (e.g. row-wise Adagrad's
    accumulators), keyed by name and shard offsets: a resume point for the same world size and plan."""
    state = {f"weight:{b.table}@{b.row},{b.col}": b.tensor for b in table_blocks(model)}
    for name, value in table_optimizer_tensors(model.fused_optimizer.state_dict()):
        state[f"optimizer:{name}"] = value
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


@torch.no_grad()
def load_table_state(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no table state for this rank; resume with the world size the run was saved with")
    optimizer_state = model.fused_optimizer.state_dict()
    with safe_open(str(path), framework="pt") as handle:
        wanted = {f"weight:{b.table}@{b.row},{b.col}": b.tensor for b in table_blocks(model)}
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
