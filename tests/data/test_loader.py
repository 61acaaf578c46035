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
