"""Where tables and dense layers live: resolved once, before any rank starts; how ranks start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cp_dist.config import DistributedConfig, load_config
from cp_dist.distributed.process_group import Placement, RankInfo, launch, resolve_placement
from cp_dist.errors import UserError


def test_host_memory_tables_use_gloo_and_keep_the_dense_device() -> None:
    dense = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_placement(DistributedConfig(table_device="cpu")) == Placement("gloo", dense, "cpu")
    assert resolve_placement(DistributedConfig(backend="gloo")) == Placement("gloo", "cpu", "cpu")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["distributed.table_device=cpu", "distributed.backend=nccl"], "exchanges tables over gloo"),
     (["distributed.table_device=gpu"], "distributed.table_device is 'gpu'; expected one of auto, cpu"),
     (["distributed.backend=mpi"], "distributed.backend is 'mpi'; expected one of auto, gloo, nccl")],
)
def test_bad_placements_are_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_placement(load_config("ml-100k", overrides).distributed)


def _write_environment(rank: RankInfo, out: Path, launch_number: int) -> None:
    (out / f"launch{launch_number}-rank{rank.rank}.txt").write_text(f"{os.getpid()} {os.environ.get('CP_DIST_PROBE', '')}")


def test_ranks_take_the_environment_of_each_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the ranks fork from a server started by the first launch; a variable set after that
    still reaches the next launch's ranks, as it would reach spawned ones."""
    for number, value in enumerate(("first", "second")):
        monkeypatch.setenv("CP_DIST_PROBE", value)
        launch(_write_environment, DistributedConfig(nproc=2, backend="gloo"), tmp_path, number)
    seen = {p.stem: p.read_text().split() for p in tmp_path.iterdir()}
    assert {name: values[1] for name, values in seen.items()} == {
        "launch0-rank0": "first", "launch0-rank1": "first", "launch1-rank0": "second", "launch1-rank1": "second"}
    assert len({values[0] for values in seen.values()} | {str(os.getpid())}) == 5, "four rank processes besides this one"
