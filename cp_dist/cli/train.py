"""Training commands: `cp-dist train STAGE` for any stage of the registry, and the named forms
`train-ctr`, `pretrain` (PA-MLM) and `finetune --with-plm / --without-plm`. All run the one loop:
an unfinished run in --out resumes, a finished one needs --overwrite."""

from __future__ import annotations

import argparse
from pathlib import Path

from cp_dist.config import SHARDINGS
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.training.stages import STAGES


def config_from(args: argparse.Namespace, preset: str | None = None):
    """The preset (default: --preset, else the data set's own) with --set and the shortcut options applied."""
    from cp_dist.config import load_config
    from cp_dist.data.meta import DatasetMeta

    overrides = list(args.set or [])
    for option, key in (("model", "ctr.model"), ("nproc", "distributed.nproc"), ("sharding", "distributed.sharding")):
        if getattr(args, option, None) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    return load_config(preset or args.preset or DatasetMeta.load(args.data).dataset, overrides)


def _train(args: argparse.Namespace) -> None:
    from cp_dist.errors import UserError
    from cp_dist.runs import RunDir
    from cp_dist.training.loop import StageJob
    from cp_dist.training.runner import train

    stage = args.stage or ("with_plm" if args.with_plm else "without_plm")
    run = RunDir(args.out)
    if run.finished and not args.overwrite:
        raise UserError(f"{args.out}: already holds a finished run ({run.metrics_file.name}); pass --overwrite to replace it")
    if args.overwrite:
        run.clear()
    start = RunDir(args.pretrained).checkpoint if args.pretrained else None
    metrics = train(StageJob(stage, args.data, args.out, config_from(args), init_from=start, fail_at_steps=tuple(args.fail_at_step)))
    line = f"{metrics['stage']} ({metrics['model']}) on {metrics['dataset']}, {metrics['world_size']} rank(s): " \
           f"{metrics['steps']} steps, last epoch loss {metrics['history'][-1]['loss']:.4f}"
    if metrics["test"] is not None:
        line += (f"; best epoch {metrics['best_epoch']}: valid AUC {metrics['valid']['auc']:.4f}, test AUC "
                 f"{metrics['test']['auc']:.4f}, test LogLoss {metrics['test']['logloss']:.4f}")
    if "fusion_weight" in metrics["model_info"]:
        line += f", fusion weight a = {metrics['model_info']['fusion_weight']:.3f}"
    print(f"{line}\nwrote {args.out}/metrics.json and {args.out}/checkpoint/")


def training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="prepared directory (`cp-dist data prepare`)")
    p.add_argument("--out", type=Path, required=True, help="run directory: checkpoint/, metrics.json, run.json, resume/")
    p.add_argument("--preset", help="YAML preset name or path (default: the data set's own preset)")
    p.add_argument("--nproc", type=int, help="ranks on this machine (gloo on CPU, NCCL on GPU)")
    p.add_argument("--sharding", choices=SHARDINGS, help="embedding-table sharding (default: auto)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a preset value, e.g. train.epochs=5")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")


def _run_options(p: argparse.ArgumentParser) -> None:
    training_options(p)
    p.add_argument("--fail-at-step", type=int, nargs="+", default=[], metavar="N",
                   help="rehearse a failure: the last rank kills itself (SIGKILL) once at global step N (at each N "
                        "given); run the command again to resume (set distributed.checkpoint_every_steps for resume "
                        "points mid-epoch)")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "train",
        help="train any registered stage (CTR model, PA-MLM, finetuning, baselines) through the one training loop",
        description="Runs STAGE with the preset's section for it, on distributed.nproc ranks and distributed.engine "
        "(plain: TorchRec tables + AdamW; hybrid: TorchRec tables + DeepSpeed ZeRO). Resume points go to OUT/resume "
        "(at each epoch's end, and every distributed.checkpoint_every_steps steps); running the command again after a "
        f"crash resumes there. Stages: {', '.join(STAGES)}.",
    )
    p.add_argument("stage", choices=list(STAGES), metavar="STAGE", help=f"one of: {', '.join(STAGES)}")
    p.add_argument("--pretrained", type=Path, metavar="RUN", help="a run whose checkpoint/ the model starts from")
    p.add_argument("--model", choices=list(BACKBONES), help="CTR backbone (default: the preset's)")
    _run_options(p)
    p.set_defaults(handler=_train)

    p = commands.add_parser(
        "train-ctr",
        help="train a CTR backbone on TorchRec-sharded embeddings; early stopping on validation AUC",
        description="Trains one of the ten backbones with its embedding tables sharded by TorchRec "
        "(DistributedModelParallel; fused row-wise Adagrad on the tables, AdamW on dense layers), keeps the "
        "epoch with the best validation AUC, and writes metrics.json (test AUC/LogLoss, per-step losses, plan) "
        "and checkpoint/ (per-rank safetensors with their sha256, loadable at any world size). Same as `train ctr`.",
    )
    p.add_argument("--model", choices=list(BACKBONES), help="backbone (default: the preset's, dcnv2)")
    _run_options(p)
    p.set_defaults(handler=_train, stage="ctr", pretrained=None)

    p = commands.add_parser(
        "pretrain",
        help="PA-MLM: the CTR model prompts the language model, which recovers masked text",
        description="Prompt-augmented masked-LM pretraining on train + valid (never test): the ID row goes "
        "through the CTR model, whose q generates prompts for the language model (section `prompt` of the "
        "preset); 15%% of the text tokens are masked (80/10/10) and recovered. Everything trains. Needs text "
        "tokenized for prompt.plm (`cp-dist data tokenize`). Settings: section `pamlm`. Same as `train pamlm`.",
    )
    _run_options(p)
    p.set_defaults(handler=_train, stage="pamlm", pretrained=None, model=None)

    p = commands.add_parser(
        "finetune",
        help="finetune after PA-MLM, with the language model (best AUC) or without it (plain CTR cost)",
        description="--with-plm (`train with_plm`, section `finetune`): CTR model, generator and PLM from PA-MLM, "
        "fresh heads, prediction sigmoid(a*y_ctr + (1-a)*y_plm) with a learnable a in (0, 1); finetune.plm_lr=0 "
        "freezes the PLM only. Without --pretrained this is the 'without PA-MLM' ablation. --without-plm "
        "(`train without_plm`, section `train`): only the CTR embeddings and interaction layers come from PA-MLM, "
        "with a fresh head; the served model is the plain backbone.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--with-plm", action="store_true")
    mode.add_argument("--without-plm", action="store_true")
    p.add_argument("--pretrained", type=Path, metavar="RUN", help="a `cp-dist pretrain` run directory")
    _run_options(p)
    p.set_defaults(handler=_train, stage=None, model=None)
