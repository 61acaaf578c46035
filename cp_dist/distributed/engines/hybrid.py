"""The hybrid engine: TorchRec shards the embedding tables, DeepSpeed ZeRO shards everything else.

ClickPrompt's parameters fall in two kinds. The ID tables are huge and sparsely updated: TorchRec's
DistributedModelParallel splits them across ranks (table-, row- or column-wise) and steps a fused
row-wise Adagrad inside backward. The dense rest (language model, prompt generator, CTR interaction
layers, heads) is what ZeRO partitions: optimizer states (stage 1), gradients (2) and parameters
(3) across the same ranks, in the same process group. The dense model reads looked-up embeddings
where the full model reads ids (its embedding module becomes an identity), so one backward through
the DeepSpeed engine reaches the lookups and steps the tables' optimizer on its way.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchrec.distributed import DistributedModelParallel

from cp_dist.config import Config, StageConfig
from cp_dist.ctr.embedding import FieldEmbedding
from cp_dist.distributed.checkpoint import save_model
from cp_dist.distributed.engines.base import ParameterGroups, Schedule, Start, dense_optimizer, shard_and_start
from cp_dist.distributed.process_group import RankInfo
from cp_dist.distributed.sharding import describe_plan
from cp_dist.distributed.tables import load_table_state, save_table_state
from cp_dist.errors import UserError
from cp_dist.runs import ENGINE_TAG, tables_file


def deepspeed_config(config: Config, global_batch_size: int, world_size: int) -> dict:
    """ZeRO settings for one optimisation step per global batch, each rank holding its slice."""
    distributed = config.distributed
    if config.train.compile and distributed.zero_stage == 3:
        raise UserError("train.compile is not supported with distributed.zero_stage 3: ZeRO-3 gathers parameters in "
                        "module hooks, and compiling through them is untested here; use stage 0-2, or train.compile=false")
    zero: dict = {"stage": distributed.zero_stage}
    if distributed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_batch_size": global_batch_size,
        "train_micro_batch_size_per_gpu": global_batch_size // world_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # AdamW with the stage's parameter groups
        # train.precision=bf16 is autocast inside the step (as everywhere in cp_dist): weights,
        # gradients and optimizer states stay fp32, and so does the exported model. DeepSpeed's own
        # bf16 mode would store the weights themselves in bf16.
        "bf16": {"enabled": False},
        "gradient_clipping": 0.0,
        "steps_per_print": 2**31 - 1,
    }


def _safe_checkpoint_engine():
    """DeepSpeed's torch checkpoint engine, loading with weights_only=True: a checkpoint never runs
    code. The few DeepSpeed classes its optimizer states hold are allow-listed by name."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]):
                return torch.load(path, map_location=map_location, weights_only=True)

    return SafeTorchCheckpointEngine()


@dataclass
class HybridEngine:
    """The Engine (cp_dist.distributed.engines.base) of a model split in two: `tables` (TorchRec) and
    `engine` (DeepSpeed), in one process group."""

    tables: DistributedModelParallel
    engine: object  # deepspeed.DeepSpeedEngine; its .module is the model with an identity for the tables
    table_prefix: str  # where the tables sit in the full model, e.g. "ctr.embedding."

    def __call__(self, ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.engine(self.tables(ids), *args, **kwargs)

    def train(self) -> None:
        self.tables.train()
        self.engine.train()

    def eval(self) -> None:
        self.tables.eval()
        self.engine.eval()

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward (the tables' optimizer steps inside it), then ZeRO's reduction and step."""
        self.engine.backward(loss)
        self.engine.step()

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def save_state(self, directory: Path) -> None:
        """Everything a resume needs from the model: DeepSpeed's partitioned weights and optimizer
        states and this rank's table shards with their optimizer state. Call on every rank; resume
        with the same world size and plan."""
        self.engine.save_checkpoint(str(directory), tag=ENGINE_TAG)
        save_table_state(self.tables, directory / tables_file(torch.distributed.get_rank()))

    def load_state(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag=ENGINE_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{directory / ENGINE_TAG}: no DeepSpeed checkpoint to resume from")
        load_table_state(self.tables, directory / tables_file(torch.distributed.get_rank()))

    def save_model(self, directory: Path, extra: dict) -> None:
        """The trained model in cp_dist's checkpoint format (what `evaluate`, finetuning and serving
        read), whatever the ZeRO stage. Call on every rank."""
        save_model(self.tables, directory, extra, table_prefix=self.table_prefix, dense_state=self.dense_state())

    def gathered(self, parameters: list[nn.Parameter]) -> AbstractContextManager:
        """Under ZeRO-3, the whole values of these (partitioned) parameters inside the block."""
        import deepspeed

        return deepspeed.zero.GatheredParameters(parameters, enabled=self.engine.zero_optimization_stage() == 3)

    def describe(self) -> dict:
        return {"engine": "hybrid", "zero_stage": self.engine.zero_optimization_stage(),
                "sharding": describe_plan(self.tables)}

    def dense_state(self) -> dict[str, torch.Tensor]:
        """The dense model's state_dict on the host (rank 0; empty elsewhere). Under ZeRO-3 each
        module's partitioned parameters are gathered in turn, so no rank ever holds the whole
        model at once; tied parameters stay one tensor (save_model stores them once)."""
        import deepspeed

        module, rank = self.engine.module, torch.distributed.get_rank()
        keep, on_host, state = set(module.state_dict()), {}, {}
        for prefix, submodule in module.named_modules():
            own = list(submodule.named_parameters(recurse=False)) + list(submodule.named_buffers(recurse=False))
            with deepspeed.zero.GatheredParameters([p for _, p in submodule.named_parameters(recurse=False)],
                                                   enabled=self.engine.zero_optimization_stage() == 3):
                for name, tensor in own:
                    key = f"{prefix}.{name}" if prefix else name
                    if rank == 0 and key in keep:
                        if id(tensor) not in on_host:
                            on_host[id(tensor)] = tensor.detach().cpu().clone()
                        state[key] = on_host[id(tensor)]
        return state


def split_tables(model: nn.Module) -> tuple[nn.Module, str]:
    """Takes the model's FieldEmbedding out, leaving an identity in its place; returns it and its
    path prefix. A model without ID tables (the text-only baselines) gets an identity for them."""
    paths = [name for name, module in model.named_modules() if isinstance(module, FieldEmbedding)]
    if len(paths) > 1:
        raise ValueError(f"expected at most one FieldEmbedding in the model, found {paths}")
    if not paths:
        return nn.Identity(), ""
    parent_path, _, name = paths[0].rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    tables = getattr(parent, name)
    setattr(parent, name, nn.Identity())
    return tables, f"{paths[0]}."


def build_hybrid(model: nn.Module, config: Config, rank: RankInfo, settings: StageConfig, *,
                 parameter_groups: ParameterGroups, schedule: Schedule = None, start: Start | None = None) -> HybridEngine:
    """Shards `model` (built under torch.manual_seed(config.train.seed), its tables on "meta") in two.
    The start checkpoint is loaded before ZeRO partitions anything."""
    import deepspeed

    os.environ.setdefault("LOCAL_RANK", str(rank.device.index if rank.device.type == "cuda" else rank.rank))
    # On CPU, DeepSpeed's comm backend JIT-compiles a shared-memory all-reduce that only tensor-parallel
    # inference calls: 40-80 s of C++ on a fresh 2-core machine before the first step. Training's
    # collectives are torch.distributed's either way. (deepspeed.ops keeps this dict for edits.)
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    deepspeed.init_distributed(dist_backend=rank.backend, auto_mpi_discovery=False)
    tables, prefix = split_tables(model)
    sharded = shard_and_start(tables, tables, config, rank, settings, start, table_prefix=prefix, dense=model)
    trainable = ((n, p) for n, p in model.named_parameters() if p.requires_grad)
    optimizer, scheduler = dense_optimizer(trainable, parameter_groups, schedule)  # the scheduler: stepped by DeepSpeed
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, dist_init_required=False,
                                      config=deepspeed_config(config, settings.global_batch_size, rank.world_size))
    engine.checkpoint_engine = _safe_checkpoint_engine()
    return HybridEngine(sharded, engine, prefix)
