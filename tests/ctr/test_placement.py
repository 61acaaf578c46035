"""Where tables and dense layers live: resolved once, before any rank starts."""

from __future__ import annotations

import pytest
import torch

from cp_dist.config import DistributedConfig, load_config
from cp_dist.distributed.process_group import Placement, resolve_placement
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
