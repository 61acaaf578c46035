"""Real MovieLens-100K: every stored count is checked against the raw files, parsed independently here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cp_dist.data.meta import SPLITS, DatasetMeta


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row)) for row in reader]


@pytest.fixture(scope="module")
def raw(ml100k_raw: Path) -> dict[str, list[dict[str, str]]]:
    return {kind: _raw_rows(ml100k_raw / f"ml-100k.{kind}") for kind in ("inter", "user", "item")}


@pytest.fixture(scope="module")
def splits(ml100k_prepared: Path) -> dict:
    return {s: pq.read_table(ml100k_prepared / f"{s}.parquet").to_pandas() for s in SPLITS}


def test_counts_match_the_raw_file(raw, ml100k_prepared: Path, splits) -> None:
    meta = DatasetMeta.load(ml100k_prepared)
    ratings = np.array([float(r["rating"]) for r in raw["inter"]])
    kept = ratings != 3
    assert meta.counts["interactions_read"] == len(raw["inter"]) == 100_000
    assert meta.counts["dropped_by_label_rule"] == int((ratings == 3).sum())
    assert sum(len(splits[s]) for s in SPLITS) == meta.counts["interactions_kept"] == int(kept.sum())
    assert sum(int(splits[s]["label"].sum()) for s in SPLITS) == int((ratings >= 4).sum())
    users_with_kept_rating = {r["user_id"] for r, k in zip(raw["inter"], kept) if k}
    assert meta.counts["distinct_users"] == len(users_with_kept_rating) == len(raw["user"]) == 943
    for s in SPLITS:
        assert meta.splits[s]["rows"] == len(splits[s])


def test_split_is_8_1_1_by_time(ml100k_prepared: Path, splits) -> None:
    sizes = np.array([len(splits[s]) for s in SPLITS])
    assert np.allclose(sizes / sizes.sum(), [0.8, 0.1, 0.1], atol=1e-4)
    assert splits["train"]["timestamp"].max() <= splits["valid"]["timestamp"].min()
    assert splits["valid"]["timestamp"].max() <= splits["test"]["timestamp"].min()


def test_text_round_trips_to_raw_values(raw, splits) -> None:
    items = {r["item_id"]: r for r in raw["item"]}
    users = {r["user_id"]: r for r in raw["user"]}
    rows = splits["test"]
    for _, row in rows.iterrows():
        item, user = items[row["item_id_text"]], users[row["user_id_text"]]
        assert row["movie_title_text"] == " ".join(item["movie_title"].split())
        assert row["genre_text"] == item["class"].split(" ")[0]
        assert row["gender_text"] == {"M": "male", "F": "female"}[user["gender"]]
        assert row["occupation_text"] == user["occupation"]


def test_ids_follow_the_training_vocabulary(ml100k_prepared: Path, splits) -> None:
    vocab = pq.read_table(ml100k_prepared / "vocab.parquet").to_pandas()
    meta = DatasetMeta.load(ml100k_prepared)
    train_values = {}
    for f in meta.fields:
        table = vocab[vocab["field"] == f.name].sort_values("index")
        assert len(table) == f.vocab_size and table["index"].tolist() == list(range(f.vocab_size))
        assert table["train_count"].sum() == len(splits["train"])
        train_values[f.name] = dict(zip(table["value"], table["index"]))
        counts = table["train_count"].to_numpy()[1:]
        assert (np.diff(counts) <= 0).all(), "indices are ordered by training frequency"
    for s in SPLITS:
        for f in meta.fields:
            vocabulary = train_values[f.name]
            expected = splits[s][f.text_column].map(lambda v, vocabulary=vocabulary: vocabulary.get(v, 0))
            assert (splits[s][f.name] == expected).all(), (s, f.name)
    assert (splits["train"][[f.name for f in meta.fields]] > 0).all().all()
    assert (splits["test"]["user_id"] == 0).any(), "users first seen after the training period map to OOV"
