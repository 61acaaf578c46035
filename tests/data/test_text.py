"""The text view of a row (its tokens: test_tokens.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from cp_dist.data.meta import DatasetMeta
from cp_dist.data.text import render_text


def test_render_text_of_a_real_row(ml100k_prepared: Path) -> None:
    meta = DatasetMeta.load(ml100k_prepared)
    table = pq.read_table(ml100k_prepared / "train.parquet").slice(0, 1)
    row = table.to_pylist()[0]
    expected = " ".join(f"{f.title} is {row[f.text_column]}." for f in meta.fields)
    assert render_text(table, meta.fields).to_pylist() == [expected]
    assert expected.startswith(f"User ID is {row['user_id_text']}. Age is ")
