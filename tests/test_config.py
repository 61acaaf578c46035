"""Presets and overrides: typed, and loud about typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.config import Config, load_config, preset_names
from cp_dist.data.errors import DataError


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
    [(["train.epoch=3"], r"unknown key train\.epoch"), (["trian.epochs=3"], "unknown section 'trian'"), (["epochs=3"], "expected section.key=value")],
)
def test_typos_are_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_config("ml-100k", overrides)


def test_missing_preset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such preset.*ml-100k"):
        load_config("ml-10m")
