"""PA-MLM masking statistics with the real MiniLM tokenizer."""

from __future__ import annotations

import torch

from cp_dist.clickprompt.masking import TokenMasker
from cp_dist.pretrained import load_tokenizer


def test_masking_rates_and_special_tokens() -> None:
    tokenizer = load_tokenizer("minilm")
    texts = [f"User ID is {k}. Gender is male. Title is Wag the Dog {k % 13}." for k in range(4000)]
    ids = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    masked, labels = TokenMasker(tokenizer, seed=0)(ids)
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


def test_fresh_masks_every_batch_reproducible_by_seed() -> None:
    tokenizer = load_tokenizer("minilm")
    ids = tokenizer(["Title is Toy Story. Film genre is Animation."] * 64, return_tensors="pt")["input_ids"]
    first, second = TokenMasker(tokenizer, seed=1), TokenMasker(tokenizer, seed=1)
    a, b = first(ids)[1], first(ids)[1]
    assert not torch.equal(a, b)
    assert torch.equal(second(ids)[1], a)
