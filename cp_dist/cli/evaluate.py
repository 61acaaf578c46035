"""`cp-dist evaluate`: a finished run's checkpoint, rebuilt alone, scored on a split."""

from __future__ import annotations

import argparse
from pathlib import Path


def _evaluate(args: argparse.Namespace) -> None:
    from cp_dist.io import write_json
    from cp_dist.training.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split)
    write_json(args.run / f"eval_{args.split}.json", {"data": str(args.data), "split": args.split, **metrics})
    print(f"{args.split}: AUC {metrics['auc']:.4f}, LogLoss {metrics['logloss']:.4f}  (wrote {args.run}/eval_{args.split}.json)")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "evaluate",
        help="AUC and LogLoss of a finished run's checkpoint on a split",
        description="Rebuilds a run's model from its checkpoint alone (architecture and config are in the index; "
        "every file's sha256 is checked first) in one process and scores a split; writes RUN/eval_<split>.json.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run directory (holds checkpoint/)")
    p.add_argument("--data", type=Path, required=True, help="prepared directory (tokenized, for with-PLM runs)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test")
    p.set_defaults(handler=_evaluate)
