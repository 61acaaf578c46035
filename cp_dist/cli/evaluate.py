"""`cp-dist evaluate` and `cp-dist diagnose`: a finished run's checkpoint, rebuilt alone, scored on a
split, or checked for what its prompts carry."""

from __future__ import annotations

import argparse
from pathlib import Path


def _evaluate(args: argparse.Namespace) -> None:
    from cp_dist.io import write_json
    from cp_dist.training.finished import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.split)
    write_json(args.run / f"eval_{args.split}.json", {"data": str(args.data), "split": args.split, **metrics})
    print(f"{args.split}: AUC {metrics['auc']:.4f}, LogLoss {metrics['logloss']:.4f}  (wrote {args.run}/eval_{args.split}.json)")


def _diagnose(args: argparse.Namespace) -> None:
    from cp_dist.experiments.diagnose import DIAGNOSE_FILE, diagnose_run, format_diagnosis

    print(format_diagnosis(diagnose_run(args.run, args.data, rows=args.rows)))
    print(f"wrote {args.run}/{DIAGNOSE_FILE}")


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

    p = commands.add_parser(
        "diagnose",
        help="does the PLM use the prompts? MLM loss with own / shuffled / no prompts, or each tower's AUC",
        description="A PA-MLM run: the MLM cross-entropy on masked field values (one whole value per row) and on "
        "masked template tokens, reading each row's own prompts, another row's, and none, on the first --rows valid "
        "rows (keys mlm_value_ce_own, _shuffled, _none, mlm_template_ce_*, mlm_value_gap = shuffled - own). A "
        "with-PLM run: test AUC of the fused logit, of y_ctr and y_plm alone, and of y_plm with shuffled prompts "
        "(auc_fused, auc_ctr, auc_plm, auc_plm_shuffled). Writes RUN/diagnose.json.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a PA-MLM or with-PLM run directory")
    p.add_argument("--data", type=Path, required=True, help="its prepared, tokenized directory")
    p.add_argument("--rows", type=int, default=512, help="valid rows for the PA-MLM diagnostics (default: %(default)s)")
    p.set_defaults(handler=_diagnose)
