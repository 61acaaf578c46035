"""Each paper data set: synthetic raw files in its native format -> prepare -> counts, vocabularies, text."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cp_dist.data.formats import get_format
from cp_dist.data.meta import SPLITS, DatasetMeta
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.errors import UserError
from tests.helpers import insert_lines

#: Per format: the interactions file, where its data lines start, and two lines it must reject.
MALFORMED = {
    "ml-1m": ("ratings.dat", 1, ["not a rating line", "12::34::five::978300760"]),
    "ml-1m-recbole": ("ml-1m.inter", 2, ["1m_1\tToy Story (1995)", "1m_1\tToy Story (1995)\tfive\t978300760"]),
    "bookcrossing": ("BX-Book-Ratings.csv", 2, ['"276725";"034545104X"', '"276726";"0155061224";"x"']),
    "amazon-toys": ("Toys_and_Games_5.json", 1, ['{"overall": 5.0, "reviewerID": "A1"', '{"reviewerID": "A1", "asin": "B1"}']),
    "goodreads": (
        "goodreads_interactions_dedup.json.gz",
        1,
        ['{"user_id": "u", "book_id": ', '{"user_id": "u", "book_id": "1", "rating": 4, "date_added": "yesterday"}'],
    ),
}
FORMATS = list(MALFORMED)
#: The data set a synthetic format is prepared as (the same name but for ML-1M's RecBole layout).
DATASET = {"ml-1m-recbole": "ml-1m"}


def _prepared(raw: Path, fmt: str, tmp_path: Path, **options) -> tuple[DatasetMeta, dict]:
    out = tmp_path / f"{fmt}-prepared"
    meta = prepare(DATASET.get(fmt, fmt), raw, out, PrepareOptions(**options))
    return meta, {s: pq.read_table(out / f"{s}.parquet").to_pandas() for s in SPLITS} | {
        "vocab": pq.read_table(out / "vocab.parquet").to_pandas()
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_counts_vocabularies_and_text_round_trip(fmt: str, make_synth, tmp_path: Path) -> None:
    raw = make_synth(fmt)
    truth = json.loads((raw / "synth_truth.json").read_text())
    meta, tables = _prepared(raw, fmt, tmp_path)
    rows = {s: tables[s] for s in SPLITS}

    assert meta.counts["interactions_read"] == truth["rows"]
    assert meta.counts["interactions_kept"] == truth["kept"] == sum(len(t) for t in rows.values())
    assert sum(int(t["label"].sum()) for t in rows.values()) == truth["positives"]
    assert meta.counts["distinct_users"] == truth["distinct_users"]
    assert meta.counts["distinct_items"] == truth["distinct_items"]
    assert meta.counts["malformed_lines"] == 0

    vocab = tables["vocab"]
    for f in meta.fields:
        values = vocab[vocab["field"] == f.name]
        assert len(values) == f.vocab_size and values["value"].is_unique
        assert values["train_count"].sum() == len(rows["train"])
        assert (rows["train"][f.name] > 0).all(), "with min_count=1 every training value is in the vocabulary"

    key_field = next(f for f in meta.fields if f.side == "item").text_column
    everything = pd.concat(list(rows.values()))
    checked_accented = 0
    for key, expected in truth["item_samples"].items():
        matches = everything[everything[key_field] == key]
        for field, value in expected.items():
            assert (matches[f"{field}_text"] == value).all(), (key, field)
        if not all(v.isascii() for v in expected.values()):
            checked_accented += len(matches)
    assert checked_accented > 0, "a title with non-ASCII (ISO-8859-1 where the format uses it) letters round-trips"


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_lines_are_skipped_and_reported(fmt: str, make_synth, tmp_path: Path) -> None:
    raw = make_synth(fmt, rows=1000)
    truth = json.loads((raw / "synth_truth.json").read_text())
    name, first_data_line, bad = MALFORMED[fmt]
    where = {first_data_line + 2: bad[0], first_data_line + 40: bad[1]}
    insert_lines(raw / name, where, get_format(DATASET.get(fmt, fmt)).encoding)  # ISO-8859-1 keeps UTF-8 bytes as they are

    meta, _ = _prepared(raw, fmt, tmp_path)
    assert meta.counts["interactions_kept"] == truth["kept"]
    assert meta.counts["malformed_lines"] == 2
    (report,) = meta.malformed
    assert report["file"].endswith(name) and report["count"] == 2
    assert [x["line"] for x in report["first_lines"]] == sorted(where)

    with pytest.raises(UserError, match=rf"{name}:{min(where)}: malformed line"):
        prepare(DATASET.get(fmt, fmt), raw, tmp_path / "strict", PrepareOptions(strict=True))
    assert not (tmp_path / "strict").exists()


def test_random_split_is_seeded(make_synth, tmp_path: Path) -> None:
    raw = make_synth("bookcrossing", rows=2000)
    first = prepare("bookcrossing", raw, tmp_path / "a", PrepareOptions(seed=3))
    again = prepare("bookcrossing", raw, tmp_path / "b", PrepareOptions(seed=3))
    other = prepare("bookcrossing", raw, tmp_path / "c", PrepareOptions(seed=4))
    assert first.split["method"] == "random"
    read = lambda d: pq.read_table(tmp_path / d / "test.parquet").column("isbn_text").to_pylist()  # noqa: E731
    assert read("a") == read("b") != read("c")
    assert first.splits == again.splits
    assert other.splits["test"]["rows"] == first.splits["test"]["rows"], "same sizes, other rows"


def test_min_count_sends_rare_values_to_oov(make_synth, tmp_path: Path) -> None:
    raw = make_synth("amazon-toys", rows=3000)
    meta, tables = _prepared(raw, "amazon-toys", tmp_path, min_count=5)
    vocab = tables["vocab"]
    user_vocab = vocab[vocab["field"] == "user_id"]
    assert (user_vocab["train_count"].iloc[1:] >= 5).all()
    assert user_vocab["train_count"].iloc[0] > 0, "some training rows hold rare users, counted under OOV"
    assert (tables["train"]["user_id"] == 0).sum() == user_vocab["train_count"].iloc[0]
