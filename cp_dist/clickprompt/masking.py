"""PA-MLM masking: 15% of the non-special text tokens; of those 80% [MASK], 10% random, 10% kept.

transformers' DataCollatorForLanguageModeling does exactly this; we hand it a vectorised
special-token mask and our own seed, so masks are fresh every batch and reproducible per run.
"""

from __future__ import annotations

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase


class TokenMasker:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, seed: int, probability: float = 0.15):
        self._collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)
        # The collator creates its seeded generator only inside __call__; we call torch_mask_tokens
        # directly (our batches are already tensors), so we hand it the generator ourselves.
        self._collator.generator = torch.Generator().manual_seed(seed)
        self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def __call__(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU ids -> (masked input ids, labels) with labels -100 wherever no loss is taken.
        On the CPU because the seeded generator is a CPU one."""
        special = torch.isin(input_ids, self._special)
        return self._collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=special)
