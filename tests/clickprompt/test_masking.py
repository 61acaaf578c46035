"""PA-MLM masking statistics with the real MiniLM tokenizer: single tokens, and whole field values."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from cp_dist.clickprompt.masking import TokenMasker
from cp_dist.data.meta import FieldMeta
from cp_dist.data.text import render_text, token_fields, value_spans
from cp_dist.errors import UserError
from cp_dist.pretrained import load_tokenizer
from cp_dist.training.stages.pamlm import maskable_fields


def test_masking_rates_and_special_tokens() -> None:
    tokenizer = load_tokenizer("minilm")
    texts = [f"User ID is {k}. Gender is male. Title is Wag the Dog {k % 13}." for k in range(4000)]
    ids = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    masked, labels = TokenMasker(tokenizer, seed=0, width=ids.shape[1])(ids, step=0)
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    selected = labels != -100
    assert not (selected & special).any(), "[CLS], [SEP] and padding are never selected"
    assert (labels[selected] == ids[selected]).all() and (masked[~selected] == ids[~selected]).all()
    rate = selected.sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.005, rate
    to_mask = (masked[selected] == tokenizer.mask_token_id).float().mean()
    kept = (masked[selected] == ids[selected]).float().mean()
    assert abs(to_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01, (to_mask, kept)  # about 0.1 random as well
    assert abs(1 - to_mask - kept - 0.1) < 0.01


def test_fresh_masks_every_step_reproducible_by_seed() -> None:
    tokenizer = load_tokenizer("minilm")
    ids = tokenizer(["Title is Toy Story. Film genre is Animation."] * 64, return_tensors="pt")["input_ids"]
    masker = TokenMasker(tokenizer, seed=1, width=32)
    assert not torch.equal(masker(ids, step=0)[1], masker(ids, step=1)[1])
    assert torch.equal(TokenMasker(tokenizer, seed=1, width=32)(ids, step=0)[1], masker(ids, step=0)[1])
    assert not torch.equal(TokenMasker(tokenizer, seed=2, width=32)(ids, step=0)[1], masker(ids, step=0)[1])


def test_a_slice_is_masked_as_in_the_whole_batch() -> None:
    """Rank r masking rows [r * B, (r + 1) * B) of a global batch, padded to its own length,
    gets exactly the whole batch's masks there: what makes PA-MLM independent of the world size."""
    tokenizer = load_tokenizer("minilm")
    texts = [f"User ID is {k}. " + "Title is Wag the Dog. " * (k % 5) for k in range(8)]
    whole = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    masker = TokenMasker(tokenizer, seed=3, width=64)
    masked, labels = masker(whole, step=7)
    for first in (0, 4):
        part = tokenizer(texts[first : first + 4], padding=True, return_tensors="pt")["input_ids"]
        part_masked, part_labels = masker(part, step=7, first_row=first, global_rows=8)
        width = part.shape[1]
        assert torch.equal(part_labels, labels[first : first + 4, :width])
        assert torch.equal(part_masked, masked[first : first + 4, :width])



def _three_fields(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and token_fields (as `cp-dist data tokenize` writes them) of rows with three fields."""
    fields = [FieldMeta("user", "User ID", "user", 10, 0), FieldMeta("title", "Title", "item", 10, 10),
              FieldMeta("genre", "Film genre", "item", 10, 20)]
    table = pa.table({"user_text": [str(k) for k in range(rows)],
                      "title_text": [["Wag the Dog", "Toy Story", "Heat"][k % 3] for k in range(rows)],
                      "genre_text": [["Comedy", "Science Fiction"][k % 2] for k in range(rows)]})
    tokenizer = load_tokenizer("minilm")
    encoding = tokenizer(render_text(table, fields).to_pylist(), return_offsets_mapping=True, return_special_tokens_mask=True)
    owners = token_fields(encoding, *value_spans(table, fields))
    ids = tokenizer.pad({"input_ids": encoding["input_ids"]}, return_tensors="pt")["input_ids"]
    padded = torch.full(ids.shape, -1, dtype=torch.long)
    for row, values in enumerate(owners):
        padded[row, : len(values)] = torch.from_numpy(values.astype("int64"))
    return ids, padded


def test_whole_field_values_are_masked_together() -> None:
    tokenizer = load_tokenizer("minilm")
    ids, owners = _three_fields(3000)
    masker = TokenMasker(tokenizer, seed=0, probability=0.2, width=ids.shape[1], unit="fields", num_fields=3)
    masked, labels = masker(ids, step=0, token_fields=owners)
    selected = labels != -100
    assert not (selected & (owners == -1)).any(), "only value tokens are selected"
    per_field = torch.stack([(selected & (owners == k)).any(1) for k in range(3)], 1)
    for k in range(3):  # a selected field is selected whole: every one of its tokens
        whole = (selected | (owners != k)).all(1)
        assert whole[per_field[:, k]].all()
    assert per_field.any(1).all(), "every row has a value to recover"
    rate = per_field.float().mean(0)
    expected = 0.2 + 0.8**3 / 3  # drawn below 0.2, or the lowest draw of a row where none was
    assert (abs(rate - expected) < 0.02).all(), (rate, expected)
    kept = (masked[selected] == ids[selected]).float().mean()
    assert abs((masked[selected] == tokenizer.mask_token_id).float().mean() - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
    part_masked, part_labels = masker(ids[1000:1500], step=0, first_row=1000, global_rows=3000, token_fields=owners[1000:1500])
    assert torch.equal(part_labels, labels[1000:1500]) and torch.equal(part_masked, masked[1000:1500])


def test_masking_restricted_to_some_fields_masks_only_those_and_a_value_in_every_row() -> None:
    tokenizer = load_tokenizer("minilm")
    ids, owners = _three_fields(2000)
    some = TokenMasker(tokenizer, seed=0, probability=0.2, width=ids.shape[1], unit="fields", num_fields=3, maskable=[0, 2])
    selected = some(ids, step=0, token_fields=owners)[1] != -100
    assert not (selected & (owners == 1)).any(), "the title (field 1) is never masked"
    per_field = torch.stack([(selected & (owners == k)).any(1) for k in range(3)], 1)
    assert per_field.any(1).all(), "every row still has a value to recover"
    expected = 0.2 + 0.8**2 / 2  # drawn below 0.2, or the lower draw of the two where neither was
    assert (abs(per_field[:, [0, 2]].float().mean(0) - expected) < 0.03).all()


def test_unknown_mask_fields_are_refused_naming_the_field() -> None:
    class Meta:
        fields = (FieldMeta("age", "Age", "user", 5, 0), FieldMeta("genre", "Genre", "item", 3, 5))

    assert maskable_fields([], Meta) is None and maskable_fields(["genre"], Meta) == [1]
    with pytest.raises(UserError, match="unknown field.*colour.*the data has age, genre"):
        maskable_fields(["colour", "genre"], Meta)
