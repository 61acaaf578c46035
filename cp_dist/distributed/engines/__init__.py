"""Training engines behind one interface (base.Engine) and one factory (build_engine):
- plain (engines.plain): tables sharded by TorchRec, the dense rest replicated (DDP);
- hybrid (engines.hybrid): tables sharded by TorchRec, the dense rest partitioned by DeepSpeed ZeRO.
The training loop sees only the interface, so every stage runs on either."""

from __future__ import annotations

from torch import nn

from cp_dist.config import Config, StageConfig
from cp_dist.distributed.engines.base import Engine, ParameterGroups, Schedule, Start
from cp_dist.distributed.process_group import RankInfo

__all__ = ["Engine", "ParameterGroups", "Schedule", "Start", "build_engine"]


def build_engine(model: nn.Module, config: Config, rank: RankInfo, settings: StageConfig, *,
                 parameter_groups: ParameterGroups, schedule: Schedule = None, start: Start | None = None) -> Engine:
    """config.distributed.engine's engine around `model`, built under torch.manual_seed(config.train.seed)
    with its tables on "meta": the tables are initialised identically whatever the sharding.
    settings: the stage's (batch size, table optimizer)."""
    if config.distributed.engine == "hybrid":
        from cp_dist.distributed.engines.hybrid import build_hybrid  # imports DeepSpeed: only when asked for

        return build_hybrid(model, config, rank, settings, parameter_groups=parameter_groups, schedule=schedule, start=start)
    from cp_dist.distributed.engines.plain import build_plain

    return build_plain(model, config, rank, settings, parameter_groups=parameter_groups, schedule=schedule, start=start)
