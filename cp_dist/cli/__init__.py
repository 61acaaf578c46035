"""The `cp-dist` command line. Each subcommand's parser sits beside its handler (cp_dist/cli/*.py),
and handlers import what they need, so `--help` and the data commands start without torch."""

from __future__ import annotations

import argparse
import sys

from cp_dist.cli import compare, data, evaluate, serve, train
from cp_dist.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cp-dist",
        description="ClickPrompt (WWW 2024) as a distributed training system. Start with `cp-dist data fetch ml-100k`, "
        "then `cp-dist compare --data ~/.cache/cp_dist/prepared/ml-100k --out runs/cmp`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, train, compare, evaluate, serve):
        module.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except UserError as err:
        print(f"cp-dist: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
