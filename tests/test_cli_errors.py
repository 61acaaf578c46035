"""Each command's common mistakes, through `main()` as a user meets them: exit code 2 and one line
on stderr that names the file, option or setting and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.cli import main


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("cp-dist: error: ") and error.count("\n") == 1, error
    return error


def test_training_commands(ml100k_prepared: Path, tmp_path: Path, capsys) -> None:
    data, out = str(ml100k_prepared), str(tmp_path / "run")
    assert "meta.json: not found" in _error(["train-ctr", "--data", str(tmp_path / "nothing"), "--out", out], capsys)
    assert "no pre-tokenized text" in _error(["pretrain", "--data", data, "--out", out], capsys)
    assert "stage without_plm starts from a checkpoint" in _error(["finetune", "--without-plm", "--data", data, "--out", out], capsys)
    assert "train.precision is 'fp16'; expected one of fp32, bf16" in _error(
        ["train-ctr", "--data", data, "--out", out, "--set", "train.precision=fp16"], capsys)
    assert "unknown key train.epoch;" in _error(["train-ctr", "--data", data, "--out", out, "--set", "train.epoch=2"], capsys)
    assert "checkpoint.json: not found" in _error(
        ["finetune", "--without-plm", "--data", data, "--out", out, "--pretrained", str(tmp_path)], capsys)
    assert "train.batch_source ray_data streams through Ray Train" in _error(
        ["train-ctr", "--data", data, "--out", out, "--set", "train.batch_source=ray_data"], capsys)
    assert "train.global_batch_size 1024 is not divisible by train.logical_shards 3" in _error(
        ["train-ctr", "--data", data, "--out", out, "--set", "train.logical_shards=3"], capsys)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_evaluation_commands(ml100k_prepared: Path, tmp_path: Path, capsys) -> None:
    assert "checkpoint.json: not found" in _error(["evaluate", "--run", str(tmp_path), "--data", str(ml100k_prepared)], capsys)
    assert "checkpoint.json: not found" in _error(["diagnose", str(tmp_path), "--data", str(ml100k_prepared)], capsys)


def test_data_commands(tmp_path: Path, capsys) -> None:
    assert "--rows 10: expected at least 100" in _error(["data", "synth", "--format", "ml-1m", "--rows", "10",
                                                        "--out", str(tmp_path / "raw")], capsys)
    assert "meta.json: not found" in _error(["data", "tokenize", "--data", str(tmp_path)], capsys)
    assert "meta.json: not found" in _error(["data", "stats", str(tmp_path)], capsys)


def test_unknown_choices_are_usage_errors(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--data", "x", "--out", "y", "--variants", "clickprompt-xl"])
    assert exit_info.value.code == 2 and "invalid choice: 'clickprompt-xl'" in capsys.readouterr().err


def test_compare_variant_presets(ml100k_prepared: Path, tmp_path: Path, capsys) -> None:
    base = ["compare", "--data", str(ml100k_prepared), "--out", str(tmp_path / "cmp")]
    assert "--variant-preset 'ctr': expected VARIANT=PRESET" in _error([*base, "--variant-preset", "ctr"], capsys)
    assert "--variant-preset 'dcn=ml-100k': expected VARIANT=PRESET" in _error([*base, "--variant-preset", "dcn=ml-100k"], capsys)
    assert "--variant-preset: ctr is given twice" in _error(
        [*base, "--variant-preset", "ctr=ml-100k", "--variant-preset", "ctr=ml-1m"], capsys)
    assert not (tmp_path / "cmp").exists()
