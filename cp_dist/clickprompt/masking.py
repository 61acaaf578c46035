"""PA-MLM masking: which text tokens the PLM must recover, and what it reads in their place.

Two units of selection (`pamlm.masking`):
- "tokens": BERT's rule, as transformers' DataCollatorForLanguageModeling applies it: each
  non-special token is selected with `probability`.
- "fields": whole field values. Each field of a row is selected with `probability` (at least one
  per row), and every token of its value with it. Most tokens of the row text are template
  ("User ID is ... . Title is ... ."), which any constant prefix predicts; a value spelled by
  several tokens is guessed from its own first token. Masking whole values leaves the PLM the
  other fields' text and the row's prompts, so the prompts have to carry what the ID row knows.
Selected tokens become [MASK] (80%), a random token (10%) or stay (10%).

One difference from transformers' collator that distributed training needs: the random draws are
a function of (seed, step, global row, token position or field) alone, so a rank masking its slice
of a global batch masks it exactly as one process masking the whole batch would. Losses then do not
depend on the world size.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
UNITS = ("tokens", "fields")


class TokenMasker:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, seed: int, probability: float = 0.15, width: int = 512,
                 unit: str = "tokens", num_fields: int = 0, maskable: list[int] | None = None):
        """width: the longest tokenized text (the data's tokenization max_length); draws are made
        for that many positions, so masks depend on it but not on how a batch is padded.
        num_fields: the data's fields (unit "fields"); maskable: the indices of those that may be
        masked (None: all). Draws are made for every field, so a subset masks a subset of the same
        draws."""
        assert unit in UNITS, unit
        self.seed, self.probability, self.width, self.unit, self.num_fields = seed, probability, width, unit, num_fields
        self.maskable = torch.ones(num_fields, dtype=torch.bool) if maskable is None else \
            torch.isin(torch.arange(num_fields), torch.tensor(maskable, dtype=torch.long))
        self.mask_token_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def __call__(self, input_ids: torch.Tensor, step: int, first_row: int = 0, global_rows: int | None = None,
                 token_fields: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU ids of rows [first_row, first_row + B) of step's global batch of global_rows rows
        (default: the batch is the whole global batch) -> (masked ids, labels; -100 where no loss).
        token_fields (unit "fields"): the field whose value each token spells, -1 elsewhere."""
        rows, length = input_ids.shape
        global_rows = rows if global_rows is None else global_rows
        if length > self.width:
            raise ValueError(f"text of {length} tokens is longer than the masker's width {self.width} (the tokenization max_length)")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        part = slice(first_row, first_row + rows)
        draws = torch.rand(3, global_rows, self.width, generator=generator)[:, part, :length]
        tokens = torch.randint(self.vocab_size, (global_rows, self.width), generator=generator)[part, :length]
        special = torch.isin(input_ids, self._special)
        if self.unit == "tokens":
            selected = (draws[0] < self.probability) & ~special
        else:
            field_draws = torch.rand(global_rows, self.num_fields, generator=generator)[part]
            selected = select_fields(token_fields, field_draws, self.probability, self.maskable) & ~special
        to_mask = selected & (draws[1] < MASK_SHARE)
        to_randomize = selected & ~to_mask & (draws[2] < RANDOM_SHARE / (1 - MASK_SHARE))
        masked = torch.where(to_mask, self.mask_token_id, torch.where(to_randomize, tokens, input_ids))
        return masked, torch.where(selected, input_ids, -100)


def select_fields(token_fields: torch.Tensor, draws: torch.Tensor, probability: float, maskable: torch.Tensor) -> torch.Tensor:
    """[B, T] tokens of the maskable fields ([F] bool) whose draw ([B, F]) is below
    `probability`; a row with none picks its present maskable field with the lowest draw, so every
    row has a value to recover."""
    rows, num_fields = draws.shape
    present = torch.zeros(rows, num_fields + 1, dtype=torch.bool)
    present.scatter_(1, token_fields.clamp_min(-1) + 1, True)  # column 0: the template
    present = present[:, 1:] & maskable
    picked = (draws < probability) & present
    lowest = torch.where(present, draws, torch.inf).argmin(1)
    none = ~picked.any(1) & present.any(1)
    picked[none, lowest[none]] = True
    padded = torch.cat([torch.zeros(rows, 1, dtype=torch.bool), picked], 1)  # token_fields -1 -> column 0
    return padded.gather(1, token_fields.long() + 1)
