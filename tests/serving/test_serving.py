"""Scoring raw candidates and ranking requests: the same scores as the training-time model, an export
that matches, bad input named, and the HTTP endpoint (started for real, on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cp_dist.config import load_config
from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.errors import UserError
from cp_dist.ray_cluster import private_token_env
from cp_dist.serving.loopback import run_on_loopback
from cp_dist.serving.ranking import Ranker, concat_inputs
from cp_dist.serving.scorer import Scorer, export_ctr
from cp_dist.training.evaluate import predict
from cp_dist.training.finished import load_run
from tests.helpers import run


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
    data = runs["data"]
    run = load_run(runs[kind], data)
    expected = predict(run.logits, SplitLoader(data, "test", global_batch_size=4096, text=run.reads_text))[:300]
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


def _ranking_request(data: Path, count: int, user_row: int) -> tuple[dict, list, list[dict]]:
    """One test row's user (every field not on the item side), the first rows' item ids, and the
    same rows as raw candidates with that user's fields."""
    meta, rows = DatasetMeta.load(data), _candidates(data, count)
    user = {f.name: rows[user_row][f.name] for f in meta.fields if f.side != "item"}
    key = next(f.name for f in meta.fields if f.side == "item")
    return user, [row[key] for row in rows], [{**row, **user} for row in rows]


@pytest.mark.parametrize("kind", ["ctr", "plm"])
def test_ranking_requests_score_as_raw_rows(runs, kind: str) -> None:
    ranker = Ranker.from_run(runs[kind], runs["data"])
    user, items, rows = _ranking_request(runs["data"], 200, user_row=7)
    assert len(set(items)) >= 10 and any(row != {**row, **user} for row in _candidates(runs["data"], 200))
    np.testing.assert_allclose(ranker.score(user, items), ranker.scorer.score(rows), atol=1e-6)


def test_ranking_unknown_items_and_bad_requests(runs) -> None:
    ranker = Ranker.from_run(runs["ctr"], runs["data"])
    user, items, _ = _ranking_request(runs["data"], 3, user_row=0)
    item_columns = ranker.catalogue.columns
    (ids,) = ranker.inputs(user, [items[0], "never an item", 12.5])
    assert (ids[0, item_columns] > 0).any() and (ids[1:, item_columns] == 0).all(), "unknown items: every item field OOV"
    user_columns = [k for k, _ in ranker.request_fields]
    assert (ids[:, user_columns] == ids[0, user_columns]).all() and (ids[0, user_columns] > 0).any()
    (alone,) = ranker.inputs(user, [items[0]])
    (as_number,) = ranker.inputs(user, [int(items[0]), items[0]])  # an id sent as a JSON number
    assert torch.equal(alone[0], ids[0]) and torch.equal(as_number[0], ids[0]) and torch.equal(as_number[1], ids[0])
    user_row = ranker.encode_user(user)
    gathered = ranker.catalogue.indices[ranker.catalogue.rows([*items, "never an item"])] + user_row
    assert np.array_equal(ranker.catalogue.ids([*items, "never an item"], user_row), gathered), "one native pass = gather + add"
    assert ranker.score(user, []).shape == (0,)
    field = ranker.request_fields[1][1].name
    with pytest.raises(UserError, match=f"user has no field '{field}'; expected all of"):
        ranker.score({k: v for k, v in user.items() if k != field}, items)
    with pytest.raises(UserError, match=f"field '{field}': a dict value"):
        ranker.score({**user, field: {"a": 1}}, items)
    with pytest.raises(UserError, match=r"items\[1\]: a list; expected an item id"):
        ranker.score(user, [items[0], [items[1]]])
    with pytest.raises(UserError, match=r"items\[70\]: a NoneType; expected an item id"):  # in the second chunk
        ranker.score(user, [items[0]] * 70 + [None])


def test_endpoint_ranks_rejects_bad_requests_and_keeps_serving(runs, tmp_path: Path) -> None:
    """`cp-dist serve` in a loopback-only namespace: ready, bound to 127.0.0.1, each bad request a 4xx
    naming its problem, then good requests (alone and 6 at once, batched) scored as in process."""
    data = runs["data"]
    ranker = Ranker.from_run(runs["ctr"], data)
    user, items, rows = _ranking_request(data, 40, user_row=3)
    field = ranker.request_fields[1][1].name
    rank = {"method": "POST", "path": "/rank", "body": {"user": user, "items": items}}
    bad = [
        ({"path": "/rank", "raw": "{not json"}, 400, "the body is not JSON"),
        ({"path": "/rank", "raw": '{"items": [' + "9" * 5000 + "]}"}, 400, "the body is not JSON"),
        ({"path": "/rank", "raw": " " * 120_000}, 413, "the body is over 116,736 bytes"),
        ({"path": "/rank", "body": [user]}, 400, "the body is an array; expected a JSON object"),
        ({"path": "/rank", "body": {"items": items}}, 400, "missing 'user'"),
        ({"path": "/rank", "body": {"user": {k: v for k, v in user.items() if k != field}, "items": items}}, 400,
         f"user has no field '{field}'"),
        ({"path": "/rank", "body": {"user": {**user, field: {"a": 1}}, "items": items}}, 400,
         f"'user' field '{field}' is an object; expected a string or a number"),
        ({"path": "/rank", "body": {"user": user, "items": items[0]}}, 400, "'items' is a string; expected an array"),
        ({"path": "/rank", "body": {"user": user, "items": [items[:2]]}}, 400, "items[0] is an array; expected an item id"),
        ({"path": "/rank", "body": {"user": user, "items": items * 2}}, 413, "80 items; at most 50 per request"),
        ({"path": "/score", "body": {"candidates": [{k: v for k, v in rows[0].items() if k != field}]}}, 400,
         f"candidate 0 has no field '{field}'"),
        ({"path": "/nowhere", "method": "GET"}, 404, "no route /nowhere"),
        ({"path": "/rank", "method": "GET"}, 405, "GET /rank: expected POST"),
    ]
    users = [_ranking_request(data, 30 + i, user_row=i)[:2] for i in range(6)]
    cases = {"sequential": [rank] + [{"method": "POST", **case} for case, _, _ in bad]
             + [rank, {"method": "POST", "path": "/score", "body": {"candidates": rows[:5]}}],
             "concurrent": [{"method": "POST", "path": "/rank", "body": {"user": u, "items": i}} for u, i in users]}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    server = [str(Path(sys.executable).with_name("cp-dist")), "serve", str(runs["ctr"]), "--data", str(data),
              "--port", "8123", "--max-candidates", "50", "--max-batch-size", "8", "--batch-wait-ms", "200"]
    probe = [sys.executable, str(Path(__file__).with_name("endpoint_probe.py")), str(tmp_path / "cases.json"),
             str(tmp_path / "seen.json"), "--", *server]
    probed = run_on_loopback(probe, timeout=600, cwd=Path(__file__).parents[2], capture_output=True, text=True,
                             env={**os.environ, **private_token_env()})
    assert (tmp_path / "seen.json").is_file(), probed.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["ready"] and seen["ready"]["status"] == 200, (seen["ready"], (tmp_path / "seen.log").read_text()[-3000:])
    assert seen["ready"]["json"]["items"] == len(ranker.catalogue)
    assert seen["listening"] == ["0100007F"], "the endpoint listens on 127.0.0.1 only"
    first, *rejected, again, scored = seen["sequential"]
    for answer, (case, status, message) in zip(rejected, bad, strict=True):
        assert answer["status"] == status and message in answer["json"]["error"], (case, answer)
        assert "\n" not in answer["json"]["error"]
    expected = ranker.score(user, items)
    for answer in (first, again):
        assert answer["status"] == 200
        np.testing.assert_allclose(answer["json"]["scores"], expected, atol=1e-6)
    np.testing.assert_allclose(scored["json"]["scores"], ranker.scorer.score(rows[:5]), atol=1e-6)
    for answer, (u, i) in zip(seen["concurrent"], users, strict=True):
        np.testing.assert_allclose(answer["json"]["scores"], ranker.score(u, i), atol=1e-6)
    stats = seen["after"]["json"]
    assert stats["requests_scored"] == 9 and stats["forward_passes"] < 9, "concurrent requests share forward passes"
    assert seen["exit_code"] == 0, "SIGINT stops the server cleanly"


def test_requests_batched_together_score_as_alone(runs) -> None:
    """The endpoint's dynamic batching: requests of other lengths (token ids padded to the longest)
    concatenated into one forward pass score as each request alone, with and without the PLM."""
    for kind in ("ctr", "plm"):
        ranker = Ranker.from_run(runs[kind], runs["data"])
        ranker.scorer.max_length = 512  # no truncation: texts of other lengths
        requests = [_ranking_request(runs["data"], count, user_row=k)[:2] for k, count in enumerate((3, 17, 9))]
        requests[1][1].append("an item that no catalogue holds, named at length")  # a longer text
        inputs = [ranker.inputs(user, items) for user, items in requests]
        if kind == "plm":
            assert len({i[1].shape[1] for i in inputs}) > 1, "the requests' token lengths differ"
        together = ranker.scorer.probabilities(*concat_inputs(inputs, ranker.scorer.pad_token_id if kind == "plm" else 0))
        alone = np.concatenate([ranker.score(user, items) for user, items in requests])
        np.testing.assert_allclose(together, alone, atol=1e-6)
