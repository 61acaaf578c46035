"""ClickPrompt training: PA-MLM pretraining, then finetuning with the PLM or without it.

Tables stay TorchRec-sharded with their fused row-wise Adagrad; the language model, the prompt
generator and the dense CTR layers train with AdamW in two learning-rate groups (PLM and CTR side).
Every PLM parameter, biases and LayerNorm weights included, gets the PLM learning rate (the
authors' code let some fall back to the optimizer default, method.md section 7).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm.auto import tqdm

from cp_dist.clickprompt.masking import TokenMasker
from cp_dist.clickprompt.model import FINETUNE_HEADS, ClickPrompt, prepare_for_finetuning, prepare_for_pretraining
from cp_dist.config import Config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.errors import DataError
from cp_dist.data.loader import Batch, SplitLoader
from cp_dist.data.meta import DatasetMeta, FieldMeta
from cp_dist.distributed.process_group import RankInfo, launch
from cp_dist.distributed.sharding import describe_plan
from cp_dist.distributed.tables import load_model, save_model
from cp_dist.io import write_json
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm
from cp_dist.pretrained import load_tokenizer
from cp_dist.training.ctr import METRICS_FILE, shard_and_initialize, train_ctr
from cp_dist.training.loop import CHECKPOINT_DIR, Fit, fit, global_step_losses

PRETRAIN_FILE = "pretrain.json"
NO_DECAY = ("bias", "LayerNorm.weight", "fusion_logit")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ClickPromptJob:
    data_dir: Path
    out_dir: Path
    config: Config
    pretrained: Path | None = None  # a pretrain() output directory


def pretrain(data_dir: Path, out_dir: Path, config: Config, *, overwrite: bool = False) -> dict:
    """PA-MLM on train + valid; writes out_dir/pretrain.json and out_dir/checkpoint/."""
    check_prompts(config)
    check_text(data_dir, config)
    _check_out(out_dir / PRETRAIN_FILE, overwrite)
    launch(_pretrain_rank, config.distributed, ClickPromptJob(data_dir, out_dir, config))
    return json.loads((out_dir / PRETRAIN_FILE).read_text())


def finetune_with_plm(data_dir: Path, pretrained: Path | None, out_dir: Path, config: Config, *, overwrite: bool = False) -> dict:
    """CTR model + generator + PLM from PA-MLM (or fresh when pretrained is None: the ablation
    without PA-MLM), fresh heads; early stopping on validation AUC."""
    check_text(data_dir, config)
    _check_out(out_dir / METRICS_FILE, overwrite)
    launch(_finetune_rank, config.distributed, ClickPromptJob(data_dir, out_dir, config, pretrained))
    return json.loads((out_dir / METRICS_FILE).read_text())


def finetune_without_plm(data_dir: Path, pretrained: Path, out_dir: Path, config: Config, *, overwrite: bool = False) -> dict:
    """Only the CTR embeddings and interaction layers come from PA-MLM; the served model is the plain backbone."""
    return train_ctr(data_dir, out_dir, config, overwrite=overwrite, init_from=pretrained / CHECKPOINT_DIR)


def check_prompts(config: Config) -> None:
    if config.prompt.num_prompts < 1:
        raise DataError("PA-MLM aligns the CTR model with the PLM through prompts: prompt.num_prompts must be at least 1")


def check_text(data_dir: Path, config: Config) -> None:
    """The data's token ids are those of config.prompt.plm's tokenizer."""
    tokenizer = DatasetMeta.load(data_dir).tokenizer
    if tokenizer is None or tokenizer["name"] != config.prompt.plm:
        found = "no pre-tokenized text" if tokenizer is None else f"text tokenized for {tokenizer['name']!r}"
        raise DataError(
            f"{data_dir}: {found}, but prompt.plm is {config.prompt.plm!r}; run "
            f"`cp-dist data tokenize --data {data_dir} --tokenizer {config.prompt.plm} --max-length {config.prompt.max_length}`"
        )


def _check_out(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path.parent}: already holds a finished run; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)


def build_clickprompt(fields: Sequence[FieldMeta], config: Config, rank: RankInfo, *, stage: str, plm_lr: float,
                      embedding_lr: float) -> tuple[DistributedModelParallel, dict]:
    """The ClickPrompt model with its tables sharded, set up for `stage` (pretrain | finetune), and
    facts worth logging (generator and PLM sizes, whether the MLM head is fresh)."""
    model, info = clickprompt_model(fields, config, rank, stage=stage, plm_lr=plm_lr)
    return shard_and_initialize(model, config, rank, embedding_lr), info


def clickprompt_model(fields: Sequence[FieldMeta], config: Config, rank: RankInfo, *, stage: str,
                      plm_lr: float) -> tuple[ClickPrompt, dict]:
    """build_clickprompt's model before any sharding, its tables on "meta"."""
    torch.manual_seed(config.train.seed)
    ctr = CTRModel(fields, config.ctr, embedding_device="meta", lookup_device=rank.table_device)
    masked_lm, fresh_head = load_masked_lm(config.prompt.plm, config.prompt.plm_layers)
    model = ClickPrompt(ctr, PromptedEncoder(masked_lm), config.prompt)
    if stage == "pretrain":
        prepare_for_pretraining(model)
    else:
        prepare_for_finetuning(model, plm_lr)
    if config.train.compile:
        model.compile_language_side()
    info = {"generator_parameters": model.generator.num_parameters if model.generator is not None else 0,
            "plm_fresh_mlm_head": fresh_head, "plm_parameters": sum(p.numel() for p in model.plm_parameters())}
    return model, info


def autocast(device: torch.device, precision: str):
    """bf16 autocast of the forward on a GPU (weights and optimizer states stay fp32); fp32 otherwise.
    Without bf16 matrix units (most CPUs) bf16 would only be slower, so the CPU always runs fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16" and device.type == "cuda")


def clickprompt_optimizer(model: torch.nn.Module, *, plm_lr: float, dense_lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Two learning rates (PLM, CTR side) x two decays (none for biases, norms, the fusion weight)."""
    groups: dict[tuple[float, float], list] = {}
    for name, parameter in in_backward_optimizer_filter(model.named_parameters()):
        if not parameter.requires_grad:
            continue
        lr = plm_lr if ".masked_lm." in f".{name}" else dense_lr
        decay = 0.0 if name.endswith(NO_DECAY) else weight_decay
        groups.setdefault((lr, decay), []).append(parameter)
    return torch.optim.AdamW([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()])


def mask_slice(masker: TokenMasker, batch: Batch, step: int, rank: RankInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of step's global batch, masked as the whole batch would be (see TokenMasker)."""
    return masker(batch.input_ids, step, first_row=rank.rank * len(batch), global_rows=len(batch) * rank.world_size)


def pamlm_loss(model, masker: TokenMasker, batch: Batch, step: int, rank: RankInfo, precision: str) -> torch.Tensor:
    """The PA-MLM loss of one batch: its text masked, recovered under the row's prompts.

    Ranks mask different numbers of tokens. Each divides its summed cross-entropy by the global
    count / world size, so that the mean over ranks (of losses, and of gradients as data-parallel
    training averages them) is the mean over every masked token of the global batch."""
    masked, labels = mask_slice(masker, batch, step, rank)
    batch, labels = batch.to(rank.device), labels.to(rank.device)
    tokens = (labels != -100).sum().float()
    if rank.world_size > 1:
        dist.all_reduce(tokens)
    with autocast(rank.device, precision):
        return model(batch.ids, masked.to(rank.device), batch.attention_mask, mlm_labels=labels,
                     mlm_tokens=tokens / rank.world_size)


def pamlm_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, masker: TokenMasker, batch: Batch, step: int,
               rank: RankInfo, precision: str) -> torch.Tensor:
    """One PA-MLM step (global step number `step`); returns the loss."""
    loss = pamlm_loss(model, masker, batch, step, rank, precision)
    optimizer.zero_grad()
    loss.backward()  # the tables' row-wise Adagrad steps inside backward
    optimizer.step()
    return loss.detach()


def click_logits(model: torch.nn.Module, batch: Batch, rank: RankInfo, precision: str) -> torch.Tensor:
    batch = batch.to(rank.device)
    with autocast(rank.device, precision):
        return model(batch.ids, batch.input_ids, batch.attention_mask).float()


def click_loss(model, batch: Batch, rank: RankInfo, precision: str) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(click_logits(model, batch, rank, precision), batch.labels.to(rank.device))


def finetune_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, rank: RankInfo,
                  precision: str) -> torch.Tensor:
    """One finetuning step with the PLM on the fused click logit; returns the loss."""
    loss = click_loss(model, batch, rank, precision)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def _pretrain_rank(rank: RankInfo, job: ClickPromptJob) -> None:
    config, settings = job.config, job.config.pretrain
    meta = DatasetMeta.load(job.data_dir)
    model, info = build_clickprompt(meta.fields, config, rank, stage="pretrain", plm_lr=settings.plm_lr,
                                    embedding_lr=settings.embedding_lr)
    optimizer = clickprompt_optimizer(model, plm_lr=settings.plm_lr, dense_lr=settings.dense_lr, weight_decay=settings.weight_decay)
    masker = TokenMasker(load_tokenizer(config.prompt.plm), seed=config.train.seed, probability=settings.mask_probability,
                         width=meta.tokenizer["max_length"])  # the longest text the data can hold
    loader = SplitLoader(job.data_dir, ["train", "valid"], global_batch_size=settings.global_batch_size, rank=rank.rank,
                         world_size=rank.world_size, shuffle=True, seed=config.train.seed, drop_last=True, text=True)
    history, started, steps = [], time.perf_counter(), 0
    model.train()
    for epoch in range(settings.epochs):
        loader.set_epoch(epoch)
        losses = []
        for batch in tqdm(loader, desc=f"PA-MLM epoch {epoch}", leave=False, disable=None if rank.is_main else True):
            if settings.max_steps is not None and steps >= settings.max_steps:
                break
            losses.append(pamlm_step(model, optimizer, masker, batch, steps, rank, config.train.precision))
            steps += 1
        if not losses:
            break
        step_losses = global_step_losses(losses, rank)
        history.append({"epoch": epoch, "steps": len(losses), "rows": len(losses) * settings.global_batch_size,
                        "mlm_loss": sum(step_losses) / len(step_losses), "step_losses": step_losses,
                        "seconds": time.perf_counter() - started})
    save_model(model, job.out_dir / CHECKPOINT_DIR, {"stage": "pretrain", "config": config.to_dict(), "dataset": meta.dataset})
    if rank.is_main:
        summary = {"dataset": meta.dataset, "rows": loader.num_rows, "rows_seen": sum(h["rows"] for h in history),
                   "history": history, **info,
                   "train_seconds": time.perf_counter() - started, "world_size": rank.world_size,
                   "sharding": describe_plan(model), "config": config.to_dict()}
        write_json(job.out_dir / PRETRAIN_FILE, summary)


def _finetune_rank(rank: RankInfo, job: ClickPromptJob) -> None:
    config, settings = job.config, job.config.finetune
    meta = DatasetMeta.load(job.data_dir)
    model, info = build_clickprompt(meta.fields, config, rank, stage="finetune", plm_lr=settings.plm_lr,
                                    embedding_lr=settings.embedding_lr)
    if job.pretrained is not None:
        load_model(model, job.pretrained / CHECKPOINT_DIR, keep=FINETUNE_HEADS)
    optimizer = clickprompt_optimizer(model, plm_lr=settings.plm_lr, dense_lr=settings.dense_lr,
                                      weight_decay=settings.weight_decay)
    precision = config.train.precision

    per_rank = {"rank": rank.rank, "world_size": rank.world_size, "text": True}
    eval_batch = config.train.eval_batch_size
    run = Fit(
        model=model, step=lambda b: finetune_step(model, optimizer, b, rank, precision),
        score=lambda b: click_logits(model, b, rank, precision),
        train=SplitLoader(job.data_dir, "train", global_batch_size=settings.global_batch_size, shuffle=True,
                          seed=config.train.seed, drop_last=True, **per_rank),
        valid=SplitLoader(job.data_dir, "valid", global_batch_size=eval_batch, **per_rank),
        test=SplitLoader(job.data_dir, "test", global_batch_size=eval_batch, **per_rank),
        epochs=settings.epochs, patience=settings.patience, out_dir=job.out_dir,
        checkpoint_extra={"stage": "finetune_with_plm", "config": config.to_dict(), "dataset": meta.dataset},
    )
    results = fit(run, rank)
    fusion = model.module.fusion_weight.item()  # DistributedModelParallel.module: the ClickPrompt model
    if rank.is_main:
        write_json(job.out_dir / METRICS_FILE, {"dataset": meta.dataset, "model": f"clickprompt+{config.ctr.model}", **results,
                                    **info, "fusion_weight": fusion, "pretrained": str(job.pretrained) if job.pretrained else None,
                                    "world_size": rank.world_size, "sharding": describe_plan(model),
                                    "config": config.to_dict()})
