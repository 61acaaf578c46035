"""How the embedding tables are split across ranks: TorchRec's planner, or a forced sharding type."""

from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchrec import EmbeddingBagCollection
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.model_parallel import DataParallelWrapper
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise
from torchrec.distributed.types import ShardingEnv, ShardingPlan, ShardingType

from cp_dist.distributed.process_group import RankInfo

#: "auto" lets the planner choose among the model-parallel types only. Data-parallel tables would
#: leave the fused row-wise Adagrad for the dense optimizer (so training would depend on the plan)
#: and run through an fbgemm dense kernel that warns of unregistered autograd.
MODEL_PARALLEL = [ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE, ShardingType.TABLE_ROW_WISE, ShardingType.ROW_WISE]
#: distributed.sharding (cp_dist.config.SHARDINGS) -> the sharding types the plan may use.
SHARDING_TYPES = {
    "auto": MODEL_PARALLEL,
    "table_wise": [ShardingType.TABLE_WISE],
    "column_wise": [ShardingType.COLUMN_WISE],
    "row_wise": [ShardingType.ROW_WISE],
}


def embedding_collection_path(model: nn.Module) -> str | None:
    """Where the model keeps its EmbeddingBagCollection (e.g. embedding.ebc, ctr.embedding.ebc);
    None for a model without ID tables (the text-only baselines)."""
    paths = [name for name, module in model.named_modules() if isinstance(module, EmbeddingBagCollection)]
    if len(paths) > 1:
        raise ValueError(f"expected at most one EmbeddingBagCollection in the model, found {paths}")
    return paths[0] if paths else None


def sharding_plan(model: nn.Module, sharding: str, rank: RankInfo) -> ShardingPlan:
    """The plan for the model's EmbeddingBagCollection.

    Row-wise gets a hand-built plan: TorchRec's planner refuses it on CPU, and the
    same plan serves GPUs. The others go through the planner, constrained to one type.
    """
    path = embedding_collection_path(model)
    if path is None:
        return ShardingPlan({})  # nothing to shard: DMP only wraps the dense model in DDP
    ebc = model.get_submodule(path)
    if sharding == "row_wise":
        per_table = {config.name: row_wise(compute_kernel="fused") for config in ebc.embedding_bag_configs()}
        module_plan = construct_module_sharding_plan(
            ebc, per_param_sharding=per_table, device_type=rank.table_device.type, world_size=rank.world_size
        )
        return ShardingPlan({path: module_plan})
    allowed = [t.value for t in SHARDING_TYPES[sharding]]
    constraints = {config.name: ParameterConstraints(sharding_types=allowed) for config in ebc.embedding_bag_configs()}
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=rank.world_size), kernel_config=KernelConfig(compute_device=rank.table_device.type)
    )
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    return planner.collective_plan(model, None, dist.GroupMember.WORLD)


class DenseDataParallel(DataParallelWrapper):
    """DDP over every parameter the plan did not shard, left on the device it already has.

    TorchRec's default wrapper first moves the whole module to DMP's device, the tables' device;
    with tables in host memory that would pull the dense layers and the language model off the GPU.
    """

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device) -> None:
        if isinstance(dmp._dmp_wrapped_module, DistributedDataParallel):
            return
        sharded = set(DistributedModelParallel._sharded_parameter_names(dmp._dmp_wrapped_module))
        dense = [n for n, p in dmp._dmp_wrapped_module.named_parameters() if n not in sharded and p.requires_grad]
        if not dense:  # the tables alone (the hybrid engine keeps the dense layers in DeepSpeed)
            return
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(dmp._dmp_wrapped_module, sharded)
        dmp._dmp_wrapped_module = DistributedDataParallel(
            dmp._dmp_wrapped_module, process_group=env.process_group, gradient_as_bucket_view=True,
            broadcast_buffers=False,
        )


def place_dense(model: nn.Module, device) -> None:
    """Moves every parameter and buffer outside the (still unsharded) tables to device; tied weights stay tied."""
    path = embedding_collection_path(model)
    tables = model.get_submodule(path) if path is not None else None

    def visit(module: nn.Module) -> None:
        if module is tables:
            return
        module._apply(lambda t: t.to(device), recurse=False)
        for child in module.children():
            visit(child)

    visit(model)


def shard(model: nn.Module, sharding: str, rank: RankInfo) -> DistributedModelParallel:
    """Wraps the model: tables sharded by the plan on rank.table_device, every other parameter
    data-parallel on rank.device."""
    place_dense(model, rank.device)
    return DistributedModelParallel(
        model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=rank.table_device,
        plan=sharding_plan(model, sharding, rank),
        data_parallel_wrapper=DenseDataParallel(),
    )


def describe_plan(model: DistributedModelParallel) -> dict[str, str]:
    """table -> sharding type and ranks, for logs and results."""
    described = {}
    for module_plan in model.plan.plan.values():
        for table, parameter in module_plan.items():
            ranks = sorted(set(parameter.ranks or []))
            described[table] = f"{parameter.sharding_type} on ranks {ranks}"
    return described
