"""Sharded (2 ranks, gloo) against single-process training, and checkpoints across shardings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cp_dist.config import DistributedConfig, load_config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.prepare import prepare
from cp_dist.data.synth import synth
from cp_dist.distributed.checkpoint import load_model
from cp_dist.distributed.process_group import RankInfo, launch
from cp_dist.training.evaluate import predict
from cp_dist.training.loop import StageJob, build_stage, train_step
from cp_dist.training.runner import train

SETTINGS = ["ctr.mlp=[32,32]", "train.epochs=2", "train.global_batch_size=256", "train.patience=5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sharding")
    synth("ml-1m", 6000, base / "raw")
    prepare("ml-1m", base / "raw", base / "prepared")
    return base / "prepared"


@pytest.fixture(scope="module")
def single_runs(data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One-process training by logical-shard count, each run once: the reference of every sharding."""
    runs: dict[int, dict] = {}

    def get(shards: int) -> dict:
        if shards not in runs:
            config = load_config("ml-1m", [*SETTINGS, f"train.logical_shards={shards}"])
            runs[shards] = train(StageJob("ctr", data, tmp_path_factory.mktemp("single") / "run", config))
        return runs[shards]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("sharding, shards", [("table_wise", 1), ("row_wise", 1), ("column_wise", 1), ("table_wise", 4)])
def test_sharded_training_matches_single_process(sharding: str, shards: int, data: Path, single_runs, tmp_path: Path) -> None:
    """With logical shards each rank reads only its half of the rows, and the steps stay the same."""
    settings = [*SETTINGS, f"train.logical_shards={shards}"]
    single = single_runs(shards)
    two_ranks = load_config("ml-1m", [*settings, "distributed.nproc=2", f"distributed.sharding={sharding}"])
    sharded = train(StageJob("ctr", data, tmp_path / sharding, two_ranks))
    assert sharded["world_size"] == 2 and all(sharding in plan for plan in sharded["sharding"].values())
    for one, two in zip(single["history"], sharded["history"], strict=True):
        assert len(one["step_losses"]) == len(two["step_losses"]) > 5
        # Same global batches: measured gap 1.2e-7 (float32 summation order) over 28 steps.
        np.testing.assert_allclose(two["step_losses"], one["step_losses"], rtol=0, atol=1e-6)
    assert abs(single["test"]["auc"] - sharded["test"]["auc"]) < 1e-4


def _score(model, device):
    return lambda batch: model(batch.ids.to(device))


def _test_loader(data: Path, rank: RankInfo) -> SplitLoader:
    # Several global batches and a short last one, drawn from 4 row ranges: predict() gathers the rank
    # slices and puts the rows back in file order (compared below with one process reading in order).
    return SplitLoader(data, "test", global_batch_size=128, rank=rank.rank, world_size=rank.world_size, logical_shards=4)


def _train_and_save(rank: RankInfo, data: Path, out: Path, sharding: str) -> None:
    config = load_config("ml-1m", [*SETTINGS, f"distributed.sharding={sharding}"])
    stage, model = build_stage("ctr", config, DatasetMeta.load(data), rank)
    for step, batch in zip(range(5), stage.batches(data, "train", training=True)):
        train_step(stage, model, batch, step)
    model.eval()
    np.save(out / f"before-rank{rank.rank}.npy", predict(_score(model, rank.device), _test_loader(data, rank)))
    model.save_model(out / "checkpoint", {"architecture": "ctr", "config": config.to_dict()})


def _load_and_predict(rank: RankInfo, data: Path, out: Path, sharding: str, tag: str) -> None:
    config = load_config("ml-1m", [*SETTINGS, f"distributed.sharding={sharding}", "train.seed=99"])
    _, model = build_stage("ctr", config, DatasetMeta.load(data), rank, init_from=out / "checkpoint")  # other initial weights
    model.eval()
    np.save(out / f"{tag}-rank{rank.rank}.npy", predict(_score(model, rank.device), _test_loader(data, rank)))


def _gathered(out: Path, tag: str, world: int) -> np.ndarray:
    """Every rank's predictions of the whole split: the same on every rank."""
    first, *others = [np.load(out / f"{tag}-rank{r}.npy") for r in range(world)]
    assert all(np.array_equal(first, other) for other in others)
    return first


@pytest.mark.slow
@pytest.mark.parametrize("nproc, sharding", [(2, "row_wise"), (1, "auto")])
def test_checkpoint_reloads_to_identical_predictions(nproc: int, sharding: str, data: Path, tmp_path: Path) -> None:
    launch(_train_and_save, DistributedConfig(nproc=nproc, backend="gloo"), data, tmp_path, sharding)
    before = _gathered(tmp_path, "before", nproc)
    assert len(before) == DatasetMeta.load(data).splits["test"]["rows"] > 3 * 128, "several global batches"

    launch(_load_and_predict, DistributedConfig(nproc=nproc, backend="gloo"), data, tmp_path, sharding, "same")
    np.testing.assert_array_equal(_gathered(tmp_path, "same", nproc), before)

    # Into another sharding and world size, and into a plain model with no process group at all.
    launch(_load_and_predict, DistributedConfig(nproc=2, backend="gloo"), data, tmp_path, "column_wise", "column")
    np.testing.assert_allclose(_gathered(tmp_path, "column", 2), before, rtol=0, atol=1e-6)
    meta = DatasetMeta.load(data)
    plain = CTRModel(meta.fields, load_config("ml-1m", SETTINGS).ctr)
    load_model(plain, tmp_path / "checkpoint")
    plain.eval()
    loader = SplitLoader(data, "test", global_batch_size=4096)
    np.testing.assert_allclose(predict(lambda b: plain(b.ids), loader), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows, cols", [(slice(0, 9000), slice(0, 16)), (slice(4000, 8500), slice(4, 12)),
                                        (slice(8191, 8193), slice(15, 16))])
def test_initial_values_of_any_shard_match_the_whole_table(rows: slice, cols: slice) -> None:
    """Row-wise, column-wise and odd shards (across generation blocks) see the whole table's values."""
    from cp_dist.distributed.tables import initial_values

    whole = initial_values("t.weight", (9000, 16), slice(0, 9000), slice(0, 16), seed=3, std=0.01)
    torch.testing.assert_close(initial_values("t.weight", (9000, 16), rows, cols, seed=3, std=0.01), whole[rows, cols], rtol=0, atol=0)
    assert not torch.equal(whole, initial_values("t.weight", (9000, 16), slice(0, 9000), slice(0, 16), seed=4, std=0.01))
