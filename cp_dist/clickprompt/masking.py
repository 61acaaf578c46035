"""PA-MLM masking: 15% of the non-special text tokens; of those 80% [MASK], 10% random, 10% kept.

BERT's rule, as transformers' DataCollatorForLanguageModeling applies it, with one difference
that distributed training needs: the random draws are a function of (seed, step, global row,
token position) alone, so a rank masking its slice of a global batch masks it exactly as one
process masking the whole batch would. Losses then do not depend on the world size.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1


class TokenMasker:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, seed: int, probability: float = 0.15, width: int = 512):
        """width: the longest tokenized text (the data's tokenization max_length); draws are made
        for that many positions, so masks depend on it but not on how a batch is padded."""
        self.seed, self.probability, self.width = seed, probability, width
        self.mask_token_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def __call__(self, input_ids: torch.Tensor, step: int, first_row: int = 0,
                 global_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU ids of rows [first_row, first_row + B) of step's global batch of global_rows rows
        (default: the batch is the whole global batch) -> (masked ids, labels; -100 where no loss)."""
        rows, length = input_ids.shape
        global_rows = rows if global_rows is None else global_rows
        if length > self.width:
            raise ValueError(f"text of {length} tokens is longer than the masker's width {self.width} (the tokenization max_length)")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        draws = torch.rand(3, global_rows, self.width, generator=generator)[:, first_row : first_row + rows, :length]
        tokens = torch.randint(self.vocab_size, (global_rows, self.width), generator=generator)[first_row : first_row + rows, :length]
        selected = (draws[0] < self.probability) & ~torch.isin(input_ids, self._special)
        to_mask = selected & (draws[1] < MASK_SHARE)
        to_randomize = selected & ~to_mask & (draws[2] < RANDOM_SHARE / (1 - MASK_SHARE))
        masked = torch.where(to_mask, self.mask_token_id, torch.where(to_randomize, tokens, input_ids))
        return masked, torch.where(selected, input_ids, -100)
