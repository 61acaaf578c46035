"""Scoring raw candidates: the same scores as the training-time model, an export that matches, and
the two kinds of bad input (unknown values, missing fields)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cp_dist.checkpoint import load_run
from cp_dist.config import load_config
from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.errors import UserError
from cp_dist.serving import Scorer, export_ctr
from cp_dist.training.evaluate import predict
from tests.clickprompt.conftest import run


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base, settings = setup
    out = tmp_path_factory.mktemp("serving")
    config = load_config("ml-1m", [*settings, "pamlm.max_steps=4"])
    run("pamlm", base / "data", out / "pre", config)
    run("without_plm", base / "data", out / "ctr", config, start=out / "pre")
    run("with_plm", base / "data", out / "plm", config, start=out / "pre")
    return {"data": base / "data", "ctr": out / "ctr", "plm": out / "plm"}


def _candidates(data: Path, count: int) -> list[dict]:
    """The test split's first rows as a client would send them: field -> readable value."""
    meta = DatasetMeta.load(data)
    table = pq.read_table(data / "test.parquet").slice(0, count)
    return [{f.name: row[f.text_column] for f in meta.fields} for row in table.to_pylist()]


@pytest.mark.parametrize("kind", ["ctr", "plm"])
def test_scores_match_the_training_time_model(runs, kind: str) -> None:
    data, meta = runs["data"], DatasetMeta.load(runs["data"])
    _, score, text = load_run(runs[kind] / "checkpoint", meta.fields)
    expected = predict(score, SplitLoader(data, "test", global_batch_size=4096, text=text))[:300]
    scores = Scorer.from_run(runs[kind], data).score(_candidates(data, 300))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_exported_model_matches(runs, tmp_path: Path) -> None:
    scorer = Scorer.from_run(runs["ctr"], runs["data"])
    rows = _candidates(runs["data"], 257)
    path = export_ctr(scorer, tmp_path / "dcnv2.pt2")
    assert not list(tmp_path.glob(".*")), "no staging file left behind"
    exported = torch.export.load(path).module()
    (ids,) = scorer.inputs(rows)
    with torch.no_grad():
        np.testing.assert_allclose(exported(ids).numpy(), scorer.score(rows), atol=1e-6)
        np.testing.assert_allclose(exported(ids[:1]).numpy(), scorer.score(rows[:1]), atol=1e-6)  # any batch size


def test_with_plm_runs_do_not_export(runs, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="only CTR-only runs"):
        export_ctr(Scorer.from_run(runs["plm"], runs["data"]), tmp_path / "plm.pt2")


def test_unknown_values_score_as_out_of_vocabulary(runs) -> None:
    scorer = Scorer.from_run(runs["ctr"], runs["data"])
    (row,) = _candidates(runs["data"], 1)
    field = scorer.vocabularies.fields[0].name
    unseen = {**row, field: "a value never seen in training"}
    (ids,) = scorer.inputs([row, unseen])
    assert ids[0, 0] > 0 and ids[1, 0] == 0 and torch.equal(ids[0, 1:], ids[1, 1:])
    with torch.no_grad():
        expected = torch.sigmoid(scorer.model(ids)).numpy()
    np.testing.assert_allclose(scorer.score([row, unseen]), expected, atol=1e-7)


def test_values_compare_as_strings(runs) -> None:
    """A client may send 25 for the vocabulary's "25": it gets the same index."""
    scorer = Scorer.from_run(runs["ctr"], runs["data"])
    rows = _candidates(runs["data"], 20)
    as_numbers = [{name: int(v) if v.isdigit() and str(int(v)) == v else v for name, v in row.items()} for row in rows]
    converted = sum(isinstance(v, int) for row in as_numbers for v in row.values())
    assert converted >= 20, "the synthetic rows have numeric values (ids, ages)"
    np.testing.assert_array_equal(scorer.vocabularies.encode(as_numbers), scorer.vocabularies.encode(rows))
    assert (scorer.vocabularies.encode(rows) > 0).mean() > 0.5


def test_missing_field_and_non_scalar_value_are_named(runs) -> None:
    scorer = Scorer.from_run(runs["ctr"], runs["data"])
    rows = _candidates(runs["data"], 3)
    field = scorer.vocabularies.fields[2].name
    del rows[1][field]
    with pytest.raises(UserError, match=f"candidate 1 has no field '{field}'"):
        scorer.score(rows)
    rows = _candidates(runs["data"], 3)
    rows[2][field] = [rows[2][field]]
    with pytest.raises(UserError, match=f"candidate 2, field '{field}': a list value; expected one value"):
        scorer.score(rows)


def test_odd_values_and_requests(runs) -> None:
    """None and NaN are values never seen in training (OOV); an empty request scores nothing; fields
    the model does not read are ignored; a dict is named as the wrong kind of value."""
    scorer = Scorer.from_run(runs["ctr"], runs["data"])
    rows = _candidates(runs["data"], 3)
    field = scorer.vocabularies.fields[1].name
    odd = [{**rows[0], field: None}, {**rows[1], field: float("nan")}, {**rows[2], "not_a_field": "x"}]
    ids = scorer.vocabularies.encode(odd)
    assert ids[0, 1] == ids[1, 1] == 0 and (ids[2] == scorer.vocabularies.encode(rows[2:])[0]).all()
    assert scorer.score([]).shape == (0,)
    with pytest.raises(UserError, match=f"candidate 0, field '{field}': a dict value; expected one value"):
        scorer.score([{**rows[0], field: {"a": 1}}])


def test_runs_that_cannot_serve_are_named(runs, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="checkpoint.json: not found; expected a checkpoint written by cp_dist"):
        Scorer.from_run(tmp_path, runs["data"])
    untokenized = tmp_path / "data"
    shutil.copytree(runs["data"], untokenized)
    meta = DatasetMeta.load(untokenized)
    DatasetMeta(**{**meta.__dict__, "tokenizer": None}).save(untokenized)
    with pytest.raises(UserError, match="a with-PLM run needs the tokenizer the data was tokenized with"):
        Scorer.from_run(runs["plm"], untokenized)
