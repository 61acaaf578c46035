"""The command line as a user meets it: --help that explains, and the data commands end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cp_dist.cli import main

HELP = [
    [],
    ["data"],
    ["data", "prepare"],
    ["data", "fetch"],
    ["data", "synth"],
    ["data", "stats"],
    ["data", "tokenize"],
    ["train"],
    ["train-ctr"],
    ["ctr-table"],
    ["pretrain"],
    ["finetune"],
    ["compare"],
    ["evaluate"],
]


@pytest.mark.parametrize("words", HELP, ids=lambda w: " ".join(w) or "top")
def test_help(words: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: cp-dist" in capsys.readouterr().out


def test_synth_prepare_stats(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    assert main(["data", "synth", "--format", "goodreads", "--rows", "3000", "--out", str(raw)]) == 0
    truth = json.loads((raw / "synth_truth.json").read_text())
    assert f"{truth['kept']:,} kept" in capsys.readouterr().out
    assert main(["data", "prepare", "--dataset", "goodreads", "--raw", str(raw), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "media_type" in printed and f"interactions  {truth['kept']:,} kept" in printed
    assert main(["data", "stats", str(out)]) == 0
    assert capsys.readouterr().out.strip() in printed


def test_console_script_is_installed() -> None:
    done = subprocess.run([Path(sys.executable).parent / "cp-dist", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "data" in done.stdout


def test_rows_per_item_lengthens_the_item_tail(tmp_path: Path, capsys) -> None:
    """`--rows-per-item` sets the catalogue's size: fewer lines per item, more items seen once or never."""
    distinct = {}
    for per_item in ("12", "1.5"):
        out = tmp_path / per_item
        assert main(["data", "synth", "--format", "amazon-toys", "--rows", "3000", "--rows-per-item", per_item, "--out", str(out)]) == 0
        distinct[per_item] = json.loads((out / "synth_truth.json").read_text())["distinct_items"]
    assert distinct["1.5"] > 3 * distinct["12"], distinct
    assert main(["data", "synth", "--format", "amazon-toys", "--rows", "3000", "--rows-per-item", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--rows-per-item 0" in capsys.readouterr().err
