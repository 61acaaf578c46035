"""PA-MLM masking statistics with the real MiniLM tokenizer."""

from __future__ import annotations

import torch

from cp_dist.clickprompt.masking import TokenMasker
from cp_dist.pretrained import load_tokenizer


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
