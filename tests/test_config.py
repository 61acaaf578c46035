"""Presets and overrides: typed, and loud about typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.config import Config, load_config, preset_names
from cp_dist.errors import UserError


def test_every_data_set_has_a_preset_that_loads() -> None:
    assert {"ml-100k", "ml-1m", "bookcrossing", "amazon-toys", "goodreads"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(load_config(name), Config)


def test_paper_reference_hyperparameters() -> None:
    ml1m, goodreads = load_config("ml-1m").ctr, load_config("goodreads").ctr
    assert (ml1m.embedding_dim, ml1m.mlp, ml1m.cross_layers) == (32, [256] * 6, 6)
    assert (goodreads.embedding_dim, goodreads.mlp, goodreads.cross_layers) == (16, [512] * 6, 6)


def test_overrides_are_typed() -> None:
    config = load_config("ml-100k", ["train.epochs=3", "ctr.mlp=[8, 4]", "train.dense_lr=0.01"])
    assert config.train.epochs == 3 and config.ctr.mlp == [8, 4] and config.train.dense_lr == 0.01


@pytest.mark.parametrize(
    "overrides, message",
    [(["train.epoch=3"], r"unknown key train\.epoch"), (["trian.epochs=3"], "unknown section 'trian'"),
     (["epochs=3"], "expected section.key=value")],
)
def test_typos_are_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config("ml-100k", overrides)


def test_missing_preset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such preset.*ml-100k"):
        load_config("ml-10m")


@pytest.mark.parametrize(
    ("override", "message"),
    [("train.epochs=3.5", "train.epochs is 3.5; expected int"), ("ctr.mlp=[8, x]", r"ctr.mlp\[1\] is 'x'; expected int"),
     ("prompt.plm_layers=two", "prompt.plm_layers is 'two'; expected int or null"),
     ("finetune.plm_lr=fast", "finetune.plm_lr is 'fast'; expected float")],
)
def test_values_of_the_wrong_type_are_errors(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config("ml-100k", [override])


def test_exponent_without_a_dot_is_a_float() -> None:
    """YAML 1.1 reads 1e-5 as a string; the override must still be the number."""
    config = load_config("ml-100k", ["finetune.plm_lr=1e-5", "prompt.plm_layers=null"])
    assert config.finetune.plm_lr == 1e-5 and isinstance(config.finetune.plm_lr, float)
    assert config.prompt.plm_layers is None


def test_a_preset_extends_another(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("extends: ml-100k\nprompt:\n  plm_layers: null\npamlm:\n  epochs: 4\n")
    config, parent = load_config(child), load_config("ml-100k")
    assert config.pamlm.epochs == 4 and config.prompt.plm_layers is None
    assert config.pamlm.max_steps == parent.pamlm.max_steps and config.ctr == parent.ctr
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(UserError, match="loops back"):
        load_config(tmp_path / "loop.yaml")
