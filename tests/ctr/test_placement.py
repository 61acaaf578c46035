"""Where tables and dense layers live: resolved once, before any rank starts."""

from __future__ import annotations

import pytest
import torch

from cp_dist.config import DistributedConfig
from cp_dist.distributed.process_group import Placement, resolve_placement


def test_host_memory_tables_use_gloo_and_keep_the_dense_device() -> None:
    dense = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_placement(DistributedConfig(table_device="cpu")) == Placement("gloo", dense, "cpu")
    assert resolve_placement(DistributedConfig(backend="gloo")) == Placement("gloo", "cpu", "cpu")


@pytest.mark.parametrize(
    ("config", "message"),
    [(DistributedConfig(table_device="cpu", backend="nccl"), "exchanges tables over gloo"),
     (DistributedConfig(table_device="gpu"), "table_device 'gpu': expected one of auto, cpu"),
     (DistributedConfig(backend="mpi"), "backend 'mpi': expected auto, gloo or nccl")],
)
def test_bad_placements_are_errors(config: DistributedConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_placement(config)
