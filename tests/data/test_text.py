"""The text view and its pre-tokenized form, with the real MiniLM tokenizer (offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import torch

from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import DatasetMeta
from cp_dist.data.text import render_text, tokenize_splits
from cp_dist.pretrained import load_tokenizer


def test_render_text_of_a_real_row(ml100k_prepared: Path) -> None:
    meta = DatasetMeta.load(ml100k_prepared)
    table = pq.read_table(ml100k_prepared / "train.parquet").slice(0, 1)
    row = table.to_pylist()[0]
    expected = " ".join(f"{f.title} is {row[f.text_column]}." for f in meta.fields)
    assert render_text(table, meta.fields).to_pylist() == [expected]
    assert expected.startswith(f"User ID is {row['user_id_text']}. Age is ")


def test_tokenize_adds_token_ids_that_the_loader_serves(ml100k_prepared: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(ml100k_prepared, data)
    meta = tokenize_splits(data, "minilm", max_length=64)
    assert meta.tokenizer == DatasetMeta.load(data).tokenizer
    assert meta.tokenizer["column"] == "input_ids" and meta.tokenizer["max_length"] == 64

    tokenizer = load_tokenizer("minilm")
    table = pq.read_table(data / "valid.parquet")
    texts = render_text(table.slice(0, 32), meta.fields).to_pylist()
    expected = tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    assert table["input_ids"].slice(0, 32).to_pylist() == expected
    assert max(len(ids) for ids in table["input_ids"].to_pylist()) <= 64

    batch = next(iter(SplitLoader(data, "valid", global_batch_size=32, text=True)))
    lengths = batch.attention_mask.sum(1)
    for row, ids in enumerate(expected):
        assert batch.input_ids[row, : lengths[row]].tolist() == ids
        assert (batch.input_ids[row, lengths[row] :] == tokenizer.pad_token_id).all()
    assert batch.input_ids.dtype == torch.int64

    # token_fields: each token of a field's value carries the field's index, every other token -1.
    first = table.slice(0, 1).to_pylist()[0]
    tokens, fields = first["input_ids"], first["token_fields"]
    assert len(fields) == len(tokens) and fields[0] == fields[-1] == -1, "[CLS] and [SEP] are template"
    for k, f in enumerate(meta.fields):
        value = [t for t, field in zip(tokens, fields) if field == k]
        assert tokenizer.decode(value) == tokenizer.decode(tokenizer(first[f.text_column], add_special_tokens=False)["input_ids"])
    template = tokenizer.decode([t for t, field in zip(tokens, fields) if field == -1], skip_special_tokens=True)
    assert template.split() == tokenizer.decode(tokenizer(" ".join(f"{f.title} is ." for f in meta.fields))["input_ids"],
                                                 skip_special_tokens=True).split()
    assert torch.equal(batch.token_fields[0, : lengths[0]], torch.tensor(fields))
    assert (batch.token_fields[1:][batch.attention_mask[1:] == 0] == -1).all()

    tokenize_splits(data, "minilm", max_length=16)  # re-tokenizing replaces the columns
    assert max(len(ids) for ids in pq.read_table(data / "test.parquet")["input_ids"].to_pylist()) <= 16
    assert not [p for p in data.iterdir() if p.name.startswith(".")]
