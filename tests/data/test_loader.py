"""The batch loader: every row once per epoch, and W rank slices that add up to the global batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.errors import UserError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cp_dist.data.synth import synth

    base = tmp_path_factory.mktemp("loader")
    synth("ml-1m", 6000, base / "raw")
    # Small row groups, so that windows, carries and shuffles across row groups are exercised.
    prepare("ml-1m", base / "raw", base / "prepared", PrepareOptions(row_group_rows=700, write_rows=1500))
    return base / "prepared"


def _ids(batches) -> np.ndarray:
    return torch.cat([b.ids for b in batches]).numpy()


def test_one_epoch_in_file_order(prepared: Path) -> None:
    meta = DatasetMeta.load(prepared)
    table = pq.read_table(prepared / "train.parquet")
    expected = np.stack([table[f.name].to_numpy() for f in meta.fields], axis=1)
    loader = SplitLoader(prepared, "train", global_batch_size=256)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-table.num_rows // 256)
    assert (_ids(batches) == expected).all()
    assert torch.cat([b.labels for b in batches]).numpy().tolist() == table["label"].to_numpy().tolist()


def test_rank_slices_make_up_the_global_batch(prepared: Path) -> None:
    single = SplitLoader(prepared, "train", global_batch_size=512, shuffle=True, seed=7, drop_last=True)
    ranks = [
        SplitLoader(prepared, "train", global_batch_size=512, rank=r, world_size=2, shuffle=True, seed=7, drop_last=True)
        for r in range(2)
    ]
    for epoch in (0, 1):
        for loader in (single, *ranks):
            loader.set_epoch(epoch)
        steps = list(zip(single, *ranks, strict=True))
        assert len(steps) == len(single) > 1
        for whole, first, second in steps:
            assert len(first) == len(second) == 256
            assert torch.equal(torch.cat([first.ids, second.ids]), whole.ids)


def test_shuffle_reorders_but_keeps_every_row(prepared: Path) -> None:
    loader = SplitLoader(prepared, "train", global_batch_size=300, shuffle=True, seed=1)
    plain = _ids(SplitLoader(prepared, "train", global_batch_size=300))
    epoch0 = _ids(loader)
    loader.set_epoch(1)
    epoch1 = _ids(loader)
    assert not (epoch0 == plain).all() and not (epoch0 == epoch1).all()
    key = lambda a: sorted(map(tuple, a.tolist()))  # noqa: E731
    assert key(epoch0) == key(plain) == key(epoch1)


def test_text_needs_tokenized_data(prepared: Path) -> None:
    with pytest.raises(UserError, match="cp-dist data tokenize"):
        SplitLoader(prepared, "train", global_batch_size=8, text=True)


def test_global_batch_must_divide(prepared: Path) -> None:
    with pytest.raises(UserError, match="not divisible"):
        SplitLoader(prepared, "train", global_batch_size=7, world_size=2)


def test_several_splits_read_as_one(prepared: Path) -> None:
    both = SplitLoader(prepared, ["train", "valid"], global_batch_size=500)
    parts = [SplitLoader(prepared, split, global_batch_size=500) for split in ("train", "valid")]
    assert both.num_rows == sum(p.num_rows for p in parts)
    assert (_ids(both) == np.concatenate([_ids(p) for p in parts])).all()


def _epoch(prepared: Path, world: int, **kwargs) -> list[list]:
    """Every rank's batches of one epoch, and the rows each rank decoded."""
    loaders = [SplitLoader(prepared, ["train", "valid"], rank=r, world_size=world, **kwargs) for r in range(world)]
    for loader in loaders:
        loader.set_epoch(1)
    batches = [list(loader) for loader in loaders]
    return batches, [loader.decoded_rows for loader in loaders]


@pytest.mark.parametrize("shuffle", [True, False])
def test_logical_shards_give_the_same_global_batches_for_any_world_size(prepared: Path, shuffle: bool) -> None:
    kwargs = dict(global_batch_size=512, logical_shards=8, shuffle=shuffle, seed=5, drop_last=False, window_pieces=2)
    (single,), (decoded_alone,) = _epoch(prepared, 1, **kwargs)
    rows = sum(f.metadata.num_rows for f in SplitLoader(prepared, ["train", "valid"], global_batch_size=8).files)
    everything = torch.cat([b.row_index[b.valid] for b in single])
    assert sorted(everything.tolist()) == list(range(rows)), "every row once, padding marked"
    assert decoded_alone == rows, "a row group that two shards share is decoded once"
    for world in (2, 4, 8):
        ranks, decoded = _epoch(prepared, world, **kwargs)
        for step, whole in enumerate(single):
            parts = [ranks[r][step] for r in range(world)]
            assert len({len(p) for p in parts}) == 1, "equal slices keep the ranks in step"
            assert torch.equal(torch.cat([p.row_index for p in parts]), whole.row_index)
            assert torch.equal(torch.cat([p.ids for p in parts]), whole.ids)
        row_group = 700  # a rank decodes the row groups its 1/W of the rows overlaps
        assert max(decoded) <= rows / world + 2 * row_group and sum(decoded) <= rows + 2 * world * row_group, (world, decoded)


def test_logical_shards_resume_without_decoding_what_came_before(prepared: Path) -> None:
    kwargs = dict(global_batch_size=256, logical_shards=4, shuffle=True, seed=2, drop_last=True, window_pieces=1, read_ahead=0)
    full = SplitLoader(prepared, "train", **kwargs)
    full.set_epoch(3)
    expected = list(full)
    resumed = SplitLoader(prepared, "train", **kwargs)
    resumed.set_epoch(3, skip=len(expected) - 2)
    first = next(iter(resumed))
    assert torch.equal(first.ids, expected[-2].ids) and torch.equal(first.row_index, expected[-2].row_index)
    assert resumed.decoded_rows <= 4 * 700, "at most one window (one row group) per shard before the first batch"
    resumed.set_epoch(3, skip=len(expected) - 2)
    assert [b.row_index.tolist() for b in resumed] == [b.row_index.tolist() for b in expected[-2:]]


def test_read_ahead_stops_with_its_consumer_and_hands_over_errors(prepared: Path, tmp_path: Path) -> None:
    import shutil
    import threading

    before = threading.active_count()
    loader = SplitLoader(prepared, "train", global_batch_size=64, shuffle=True, read_ahead=2)
    batches = iter(loader)
    next(batches)
    batches.close()
    assert threading.active_count() == before, "the read-ahead thread ended when the consumer stopped"

    damaged = tmp_path / "damaged"
    shutil.copytree(prepared, damaged)
    loader = SplitLoader(damaged, "train", global_batch_size=64)
    (damaged / "train.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    with pytest.raises(OSError):
        list(loader)
    assert threading.active_count() == before


def test_batch_sizes_must_divide_by_the_logical_shards(prepared: Path) -> None:
    with pytest.raises(UserError, match="logical_shards 3"):
        SplitLoader(prepared, "train", global_batch_size=512, logical_shards=3)
