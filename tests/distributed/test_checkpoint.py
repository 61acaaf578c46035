"""The model's on-disk format refuses a damaged checkpoint: a truncated, altered or missing file, or
an unreadable index, is one line naming the file and what was expected, and nothing is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cp_dist.cli import main
from cp_dist.config import CTRConfig, load_config
from cp_dist.ctr.model import CTRModel
from cp_dist.data.meta import FieldMeta
from cp_dist.distributed.checkpoint import load_model, read_index, save_model
from cp_dist.distributed.tables import initialize_tables
from cp_dist.errors import UserError
from cp_dist.runs import DENSE_FILE, INDEX_FILE
from cp_dist.training.loop import StageJob
from cp_dist.training.runner import train

FIELDS = [FieldMeta(f"f{k}", f"Field {k}", "user" if k < 2 else "item", size, 0) for k, size in enumerate([50, 9, 3000])]
TABLES = "tables-rank00000.safetensors"


def _model(seed: int) -> CTRModel:
    torch.manual_seed(seed)
    model = CTRModel(FIELDS, CTRConfig(embedding_dim=8, mlp=[16]))
    initialize_tables(model, seed=seed, std=0.1)
    return model


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    save_model(_model(0), tmp_path / "checkpoint", {"architecture": "ctr", "stage": "ctr", "scores_clicks": True})
    return tmp_path / "checkpoint"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    """A thousand bytes in the middle of the file, inverted: the file keeps its size and still parses."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1000] = bytes(b ^ 0xFF for b in data[middle : middle + 1000])
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated tables": (TABLES, _truncate, "sha256"),
    "altered tables": (TABLES, _flip, "sha256"),
    "altered dense": (DENSE_FILE, _flip, "sha256"),
    "missing tables": (TABLES, Path.unlink, "missing"),
    "unreadable index": (INDEX_FILE, _truncate, "not a cp_dist checkpoint index"),
    "missing index": (INDEX_FILE, Path.unlink, "not found"),
}


def test_an_intact_checkpoint_loads(checkpoint: Path) -> None:
    model = _model(1)
    load_model(model, checkpoint)
    for (name, loaded), saved in zip(model.state_dict().items(), _model(0).state_dict().values(), strict=True):
        assert torch.equal(loaded, saved), name
    assert set(read_index(checkpoint)["files"]) == {TABLES, DENSE_FILE}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_and_nothing_is_loaded(checkpoint: Path, damage: str) -> None:
    name, spoil, expected = DAMAGE[damage]
    spoil(checkpoint / name)
    model = _model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as error:
        load_model(model, checkpoint)
    message = str(error.value)
    assert "\n" not in message and name in message and expected in message, message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing was written into the model"


def test_a_checkpoint_of_another_format_version_is_refused(checkpoint: Path) -> None:
    index = json.loads((checkpoint / INDEX_FILE).read_text())
    (checkpoint / INDEX_FILE).write_text(json.dumps(index | {"format_version": 1}))
    with pytest.raises(UserError, match="format_version 1, expected 2"):
        read_index(checkpoint)


def test_cp_dist_evaluate_refuses_a_damaged_run_in_one_line(ml100k_prepared: Path, tmp_path: Path, capsys) -> None:
    config = load_config("ml-100k", ["train.epochs=1", "ctr.mlp=[16]"])
    train(StageJob("ctr", ml100k_prepared, tmp_path / "run", config))
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(ml100k_prepared)]) == 0
    capsys.readouterr()
    _flip(tmp_path / "run" / "checkpoint" / TABLES)
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(ml100k_prepared)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("cp-dist: error: ") and f"{TABLES}: sha256" in error, error
