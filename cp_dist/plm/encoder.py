"""A BERT- or RoBERTa-family masked LM that reads soft prompts from the CTR side.

Two placements (the paper's section 3 and its ablation):
- deep: every layer gets its own K prefix keys and values, prefix-tuning style. They go in as a
  fresh transformers DynamicCache per forward (transformers 5 no longer accepts the old tuple cache),
  with a 2-D mask over [K prefix slots ; text] and explicit text position ids, so text positions
  are not shifted by K. Prefix slots have no queries.
- input: K prompt vectors are prepended to the word embeddings and travel through every layer
  (the ablation "prompts at the input layer only"); text positions stay unshifted there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, DynamicCache, PreTrainedModel
from transformers.utils import logging as hf_logging

from cp_dist.pretrained import RANDOM_CONFIGS, resolve

#: Model types whose position ids start after the padding index (RoBERTa's scheme).
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "data2vec-text"}


@dataclass
class Prompts:
    """Soft prompts for one batch. deep: keys/values [L, B, heads, K, head_dim]; input: vectors [B, K, hidden]."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    vectors: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return self.keys.shape[3] if self.keys is not None else self.vectors.shape[1]


def load_masked_lm(name_or_path: str, num_layers: int | None = None) -> tuple[PreTrainedModel, bool]:
    """The masked LM (its first num_layers encoder layers, or all) and whether its MLM head is fresh.

    A checkpoint without an MLM head (the bundled MiniLM is a sentence encoder) gets a freshly
    initialised transform, with the decoder tied to the word embeddings by transformers itself.
    Weights load as fp32 whatever the checkpoint stores (mixed precision is autocast's job).
    `random:roberta-base` and `random:roberta-large` build those configurations with random weights.
    """
    if name_or_path in RANDOM_CONFIGS:
        model_type, sizes = RANDOM_CONFIGS[name_or_path]
        layers = {} if num_layers is None else {"num_hidden_layers": num_layers}
        return masked_lm_from_config(model_type, **{**sizes, **layers}), True
    # transformers prints a table of missing / unexpected keys; we report the one fact that matters.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        layers = {} if num_layers is None else {"num_hidden_layers": num_layers}
        model, info = AutoModelForMaskedLM.from_pretrained(
            resolve(name_or_path), output_loading_info=True, dtype=torch.float32, **layers
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh_head = any(not key.startswith(model.base_model_prefix) for key in info["missing_keys"])
    return model, fresh_head


def masked_lm_from_config(model_type: str, **overrides) -> PreTrainedModel:
    """A randomly initialised masked LM of a family's configuration (for users without weights, and tests)."""
    return AutoModelForMaskedLM.from_config(AutoConfig.for_model(model_type, **overrides))


def text_position_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, config) -> torch.Tensor:
    """The position ids the model would use for this text on its own."""
    if config.model_type in PADDING_OFFSET_POSITIONS:
        return attention_mask.long().cumsum(1) * attention_mask.long() + config.pad_token_id
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


class PromptedEncoder(nn.Module):
    """Runs the masked LM's encoder with prompts; returns the text tokens' last hidden states."""

    def __init__(self, masked_lm: PreTrainedModel):
        super().__init__()
        self.masked_lm = masked_lm
        config = masked_lm.config
        self.num_layers, self.hidden = config.num_hidden_layers, config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.hidden // self.num_heads

    @property
    def encoder(self) -> PreTrainedModel:
        return self.masked_lm.base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: Prompts | None = None) -> torch.Tensor:
        """[B, T] tokens -> [B, T, hidden] (prompt slots are never part of the output)."""
        positions = text_position_ids(input_ids, attention_mask, self.masked_lm.config)
        if prompts is None:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).last_hidden_state
        ones = torch.ones(input_ids.shape[0], prompts.count, dtype=attention_mask.dtype, device=attention_mask.device)
        if prompts.keys is not None:
            cache = DynamicCache()
            for layer in range(self.num_layers):
                cache.update(prompts.keys[layer], prompts.values[layer], layer)
            return self.encoder(
                input_ids=input_ids, attention_mask=torch.cat([ones, attention_mask], 1), position_ids=positions,
                past_key_values=cache, use_cache=False,
            ).last_hidden_state
        words = self.encoder.get_input_embeddings()(input_ids)
        prompt_positions = torch.full_like(positions[:, : prompts.count], positions[0, 0].item())
        hidden = self.encoder(
            inputs_embeds=torch.cat([prompts.vectors, words], 1),
            attention_mask=torch.cat([ones, attention_mask], 1),
            position_ids=torch.cat([prompt_positions, positions], 1),
        ).last_hidden_state
        return hidden[:, prompts.count :]

    @property
    def mlm_head(self) -> nn.Module:
        """The masked-LM head: the one child of the model besides its encoder (BERT's cls, RoBERTa's lm_head)."""
        (head,) = (m for n, m in self.masked_lm.named_children() if n != self.masked_lm.base_model_prefix)
        return head

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlm_head(hidden)

    def mlm_loss(self, hidden: torch.Tensor, labels: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the MLM head on the positions with a label (not -100), summed and divided
        by `tokens` (default: their number here; data-parallel ranks pass the global count / W)."""
        selected = labels != -100
        total = nn.functional.cross_entropy(self.mlm_logits(hidden[selected]), labels[selected], reduction="sum")
        return total / (selected.sum() if tokens is None else tokens)

    def mlm_head_only_parameters(self) -> list[nn.Parameter]:
        """The MLM head's parameters that the encoder does not share (its decoder is tied to the word embeddings)."""
        shared = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.mlm_head.parameters() if id(p) not in shared]
