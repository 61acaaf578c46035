"""`cp-dist tune`: a 4-trial search end to end on a local Ray cluster (loopback only), and the
search-space file's refusals."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from cp_dist.config import Config, load_config
from cp_dist.errors import UserError
from cp_dist.experiments.tune import read_space
from cp_dist.ray_cluster import private_token_env
from cp_dist.serving.loopback import run_on_loopback

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize(("space", "expected"), [
    ("ctr: {train.dense_lr: {loguniform: [1.0e-4, 1.0e-2]}}\nbert4rec: {train.dense_lr: {choice: [0.1]}}",
     "space.yaml: unknown variant 'bert4rec'"),
    ("ctr: {train.dense_rate: {choice: [0.1]}}", "space.yaml: ctr.train.dense_rate: .*unknown key train.dense_rate"),
    ("ctr: {train.dense_lr: {gaussian: [0, 1]}}", "space.yaml: ctr.train.dense_lr: unknown distribution 'gaussian'"),
    ("ctr: {train.dense_lr: {uniform: [0.1]}}", r"space.yaml: ctr.train.dense_lr: uniform takes \[low, high\]"),
    ("ctr: {train.dense_lr: {uniform: [0.1, 0.01]}}", "low < high"),
    ("ctr: {train.epochs: {choice: [2, many]}}", "space.yaml: ctr.train.epochs: .*train.epochs is 'many'; expected int"),
    ("ctr: {pamlm.masking: {choice: [fields, words]}}", "pamlm.masking is .words.; expected one of"),
    ("- ctr", "expected a mapping of variant to its search space"),
])
def test_a_bad_search_space_is_refused_naming_the_file_and_key(tmp_path: Path, space: str, expected: str) -> None:
    (tmp_path / "space.yaml").write_text(space)
    with pytest.raises(UserError, match=expected):
        read_space(tmp_path / "space.yaml", Config())


def test_the_shipped_search_spaces_are_valid() -> None:
    for path in sorted((REPO / "cp_dist" / "presets" / "search").glob("*.yaml")):
        space = read_space(path, load_config(path.stem))
        assert "ctr" in space and len(space) > 1, path


@pytest.mark.slow
def test_a_search_gives_every_variant_the_same_trials_and_chooses_on_validation_only(setup, tmp_path: Path) -> None:
    base, settings = setup
    space = {"ctr": {"train.dense_lr": {"loguniform": [1e-4, 1e-2]}, "ctr.embedding_dim": {"choice": [8, 16]}},
             "clickprompt-no-plm": {"pamlm.embedding_lr": {"loguniform": [0.01, 0.1]}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    out = tmp_path / "search"
    command = [sys.executable, "-m", "cp_dist.cli", "tune", "--data", str(base / "data"), "--out", str(out), "--preset",
               "ml-1m", "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--cpus-per-trial", "1",
               *[f"--set={s}" for s in [*settings, "pamlm.max_steps=6", "train.epochs=2"]]]
    env = {**os.environ, **private_token_env()}
    done = run_on_loopback(command, timeout=900, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    text = (out / "tune.json").read_text()
    assert '"test' not in text, "the search reads validation figures only"
    payload = json.loads(text)
    by_variant = {entry["variant"]: entry for entry in payload["variants"]}
    assert set(by_variant) == {"ctr", "clickprompt-no-plm"}
    for name, entry in by_variant.items():
        trials = entry["trials"]
        assert len(trials) == 2 and len({t["trial"] for t in trials}) == 2, "two distinct trials per variant"
        for trial in trials:
            assert set(trial["params"]) == set(space[name])
            run = json.loads((out / "trials" / name / trial["trial"] / name / "metrics.json").read_text())  # a normal run
            assert trial["valid_auc"] == run["valid"]["auc"] != run["test"]["auc"], "scored on validation rows"
        lows_highs = [(k, *d.get("loguniform", [None, None])) for k, d in space[name].items()]
        for key, low, high in lows_highs:
            if low is not None:
                assert all(low <= t["params"][key] <= high for t in trials)
        assert entry["best"]["valid_auc"] == max(t["valid_auc"] for t in trials)
        preset = load_config(out / f"best-{name}.yaml")
        for key, value in entry["best"]["params"].items():
            section, _, field = key.partition(".")
            assert math.isclose(getattr(getattr(preset, section), field), value)
        assert preset.ctr.mlp == [32] and preset.ctr.cross_layers == 1, "the search's --set overrides are kept"
        assert preset.train.global_batch_size == load_config("ml-1m").train.global_batch_size, "it extends the preset"
    gaps = [t["mlm_value_gap"] for t in by_variant["clickprompt-no-plm"]["trials"]]
    assert all(g is not None for g in gaps) and all(t["mlm_value_gap"] is None for t in by_variant["ctr"]["trials"])
    assert "value gap" in (out / "tune.md").read_text()

    metrics = sorted(out.glob("trials/*/*/*/metrics.json"))
    written = [m.stat().st_mtime_ns for m in metrics]
    again = run_on_loopback(command, timeout=600, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [m.stat().st_mtime_ns for m in sorted(out.glob("trials/*/*/*/metrics.json"))] == written, "trials are reused"
    assert json.loads((out / "tune.json").read_text())["variants"] == payload["variants"]
