"""The model's on-disk format, read by training (start checkpoints), evaluation and serving.

A checkpoint directory holds (file names: cp_dist.runs):
- one file per rank of the embedding-table blocks it held, keyed by their offsets in the full
  table (runs.block_key), so a checkpoint loads into any sharding or world size;
- the dense weights (tied weights stored once, listed under "aliases");
- the index: table shapes, files with their sha256, the architecture, the stage and config that
  produced it.

No pickle anywhere: loading never runs code. Every file's digest is checked before anything is
read, so a truncated, altered or missing file is refused with one line naming it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cp_dist.config import Config
from cp_dist.data.meta import FieldMeta
from cp_dist.distributed.tables import TableBlock, is_table, table_blocks
from cp_dist.errors import UserError
from cp_dist.io import file_digest, replace_dir, verify_digests
from cp_dist.models import ARCHITECTURES
from cp_dist.runs import DENSE_FILE, INDEX_FILE, block_key, parse_block_key, tables_file

FORMAT_VERSION = 2


def _rank() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_model(model: nn.Module, directory: Path, extra: dict, *, table_prefix: str = "",
               dense_state: dict[str, torch.Tensor] | None = None) -> None:
    """Writes every rank's table blocks and rank 0's dense weights. Call on every rank.

    extra: at least "architecture" (see cp_dist.models) and "config"; it goes into the index.
    dense_state replaces the dense part of model.state_dict() when the tables and the dense layers
    live in different modules (the hybrid engine: `model` holds the tables under `table_prefix`).
    Files are staged in a hidden sibling and the directory is replaced only once all ranks have
    written theirs, so every rank must see the same directory (one machine, or shared storage).
    """
    rank, world = _rank()
    staging = directory.parent / f".{directory.name}.staging"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    _barrier()
    blocks = {
        block_key(b.table, b.row, b.col): b.tensor.detach().contiguous().cpu()
        for b in table_blocks(model, table_prefix)
        if not b.replicated or rank == 0
    }
    save_file(blocks, str(staging / tables_file(rank)))
    _barrier()
    if rank == 0:
        state = model.state_dict()
        dense, aliases = _dense_without_aliases(dense_state if dense_state is not None else state)
        save_file(dense, str(staging / DENSE_FILE))
        names = [tables_file(r) for r in range(world)] + [DENSE_FILE]
        index = {
            "format_version": FORMAT_VERSION,
            "world_size": world,
            "tables": {table_prefix + k: list(v.size()) for k, v in state.items() if is_table(k)},
            "files": {name: file_digest(staging / name) for name in names},
            "aliases": aliases,
        }
        (staging / INDEX_FILE).write_text(json.dumps(index | extra, indent=2) + "\n")
    _barrier()
    if rank == 0:
        replace_dir(staging, directory)
    _barrier()


def _dense_without_aliases(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Dense tensors on the host, tied weights (e.g. an MLM decoder and the word embeddings) stored once."""
    dense, aliases, owner = {}, {}, {}
    for key, value in state.items():
        if is_table(key):
            continue
        storage = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if storage in owner:
            aliases[key] = owner[storage]
        else:
            owner[storage] = key
            dense[key] = value.detach().contiguous().cpu()
    return dense, aliases


def read_index(directory: Path) -> dict:
    """The checkpoint's index, once every file it lists is there with its recorded digest."""
    index_path = directory / INDEX_FILE
    if not index_path.is_file():
        raise UserError(f"{index_path}: not found; expected a checkpoint written by cp_dist (a run's checkpoint/)")
    try:
        index = json.loads(index_path.read_text())
        version, files = index.get("format_version"), index["files"]
    except (ValueError, KeyError, AttributeError) as err:
        raise UserError(f"{index_path}: not a cp_dist checkpoint index ({err}); the checkpoint was not loaded") from None
    if version != FORMAT_VERSION:
        raise UserError(f"{index_path}: format_version {version}, expected {FORMAT_VERSION} (written by another "
                        "cp_dist version); train the run again")
    verify_digests(directory, files, index_path)
    return index


@torch.no_grad()
def load_model(model: nn.Module, directory: Path, *, source_prefix: str = "", keep: tuple[str, ...] = (),
               table_prefix: str = "", dense: nn.Module | None = None, tables: bool = True,
               index: dict | None = None) -> dict:
    """Loads a checkpoint into a model of any sharding or world size; returns its index.

    source_prefix: where the model sits inside the saved one (e.g. "ctr." to take the CTR model
    out of a PA-MLM checkpoint). keep: prefixes of parameters that stay as they are (fresh heads);
    every other parameter must be in the checkpoint. table_prefix and dense: as in save_model, the
    tables in `model` and the dense weights in `dense` (not yet partitioned by ZeRO). tables=False
    leaves the embedding tables as they are. index: read_index's, when the caller has verified it.
    Nothing is written into the model before the whole checkpoint has been checked.
    """
    index = index if index is not None else read_index(directory)
    saved: dict[str, list[tuple[str, int, int, Path]]] = {}
    for name in index["files"]:
        if name == DENSE_FILE:
            continue
        with safe_open(str(directory / name), framework="pt") as handle:
            for key in handle.keys():
                table, row, col = parse_block_key(key)
                saved.setdefault(table, []).append((key, row, col, directory / name))
    blocks = list(table_blocks(model, table_prefix)) if tables else []
    state = (dense if dense is not None else model).state_dict()
    with safe_open(str(directory / DENSE_FILE), framework="pt") as handle:
        aliases = index.get("aliases", {})
        sources = {k: aliases.get(source_prefix + k, source_prefix + k) for k in state if not is_table(k) and not k.startswith(keep)}
        missing = sorted(set(sources.values()) - set(handle.keys())) + sorted(
            source_prefix + b.table for b in blocks if source_prefix + b.table not in saved)
        if missing:
            raise UserError(f"{directory}: has no weights for {missing[0]} (and {len(missing) - 1} more); "
                            "it was saved from another model or configuration")
        for block in blocks:
            filled = _fill_block(block, saved[source_prefix + block.table])
            if filled != block.tensor.numel():
                raise UserError(f"{directory}: table {block.table} covers {filled} of {block.tensor.numel()} values of this shard")
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


def rebuild(checkpoint: Path, fields: Sequence[FieldMeta], *, index: dict | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode, index), rebuilt in one plain process from a checkpoint alone: its
    architecture and config come from the index (`index`: read_index's, already verified)."""
    index = index if index is not None else read_index(checkpoint)
    config = Config.from_dict(index["config"], str(checkpoint / INDEX_FILE))
    model = ARCHITECTURES.lookup(index["architecture"], f"{checkpoint / INDEX_FILE}: architecture")(fields, config)
    load_model(model, checkpoint, index=index)
    return model.eval(), index
