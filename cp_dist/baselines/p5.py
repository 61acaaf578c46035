"""P5 (Geng et al., 2022), a baseline of the paper's Table 2: the row text followed by a question,
and the click logit is the PLM's logit of the answer "yes" minus that of "no" (the probability of
"yes" between the two answers). Two forms, chosen by the PLM (config.prompt.plm):

- generative, the paper's: an encoder-decoder (T5, BART, any Hugging Face name) reads
  "<row text> Clicked?" and the answer is its decoder's first token;
- cloze, for encoder-only PLMs (MiniLM, BERT, RoBERTa): the MLM head answers "<row text> Clicked? [MASK]".

It scores every row with the PLM, at the PLM's cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cp_dist.config import Config
from cp_dist.data.meta import FieldMeta
from cp_dist.errors import UserError
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm
from cp_dist.pretrained import is_encoder_decoder, load_seq2seq_lm, load_tokenizer

QUESTION = " Clicked?"
ANSWERS = (" yes", " no")


class P5(nn.Module):
    reads_text = True

    def __init__(self, encoder: PromptedEncoder, question: list[int], answers: tuple[int, int], suffix_length: int,
                 pad_token_id: int):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("question", torch.tensor(question), persistent=False)  # its last token: [MASK]
        self.answers, self.suffix_length, self.pad_token_id = answers, suffix_length, pad_token_id

    def forward(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The click logit [B], logit("yes") - logit("no") at the [MASK]. `ids` are unused: the
        engines pass every model the ID row first, and this one has no ID tables."""
        cloze_ids, cloze_mask, answer_at = append_question(input_ids, attention_mask, self.question,
                                                           self.suffix_length, self.pad_token_id)
        hidden = self.encoder(cloze_ids, cloze_mask)
        logits = self.encoder.mlm_logits(hidden[torch.arange(len(hidden), device=hidden.device), answer_at])
        yes, no = self.answers
        return logits[:, yes] - logits[:, no]

    def compile_language_side(self) -> None:
        self.encoder.compile()


class P5Generative(nn.Module):
    """The paper's form: an encoder-decoder reads the row text and the question, and its decoder's
    first step, from the decoder's start token, scores the answers."""

    reads_text = True

    def __init__(self, seq2seq_lm: nn.Module, question: list[int], answers: tuple[int, int], suffix_length: int,
                 pad_token_id: int):
        super().__init__()
        self.seq2seq_lm = seq2seq_lm
        self.register_buffer("question", torch.tensor(question), persistent=False)
        self.answers, self.suffix_length, self.pad_token_id = answers, suffix_length, pad_token_id
        self.decoder_start = seq2seq_lm.config.decoder_start_token_id

    def forward(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The click logit [B], logit("yes") - logit("no") of the first answer token. `ids` are unused."""
        asked_ids, asked_mask, _ = append_question(input_ids, attention_mask, self.question, self.suffix_length,
                                                   self.pad_token_id)
        start = torch.full((len(asked_ids), 1), self.decoder_start, dtype=asked_ids.dtype, device=asked_ids.device)
        logits = self.seq2seq_lm(input_ids=asked_ids, attention_mask=asked_mask, decoder_input_ids=start).logits[:, 0]
        yes, no = self.answers
        return logits[:, yes] - logits[:, no]

    def compile_language_side(self) -> None:
        self.seq2seq_lm.compile()


def append_question(input_ids: torch.Tensor, attention_mask: torch.Tensor, question: torch.Tensor,
                    suffix_length: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded texts with `question` inserted before each one's closing special tokens (the last
    suffix_length of its tokens): (ids, mask, position of the question's last token), no loop over rows."""
    rows, width = input_ids.shape
    asked = len(question)
    lengths = attention_mask.sum(1)
    cut = (lengths - suffix_length)[:, None]
    position = torch.arange(width + asked, device=input_ids.device)[None, :]
    in_question = (position >= cut) & (position < cut + asked)
    source = torch.where(position < cut, position, position - asked).clamp(0, width - 1)
    ids = torch.where(in_question, question[(position - cut).clamp(0, asked - 1)], input_ids.gather(1, source.expand(rows, -1)))
    mask = position < (lengths[:, None] + asked)
    return torch.where(mask, ids, pad_token_id), mask.to(attention_mask.dtype), cut[:, 0] + asked - 1


def question_tokens(tokenizer, cloze: bool = True) -> tuple[list[int], tuple[int, int], int]:
    """(the question's ids, ending in [MASK] for the cloze form, the ids of "yes" and "no", how many
    special tokens close a text)."""
    question = tokenizer(QUESTION, add_special_tokens=False)["input_ids"] + ([tokenizer.mask_token_id] if cloze else [])
    answers = []
    for answer in ANSWERS:
        pieces = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise UserError(f"{tokenizer.name_or_path}: the answer {answer.strip()!r} is {len(pieces)} tokens; "
                            "P5's encoder-only form needs a one-token answer")
        answers.append(pieces[0])
    marked = tokenizer("x", return_special_tokens_mask=True)
    special = np.asarray(marked["special_tokens_mask"], bool)
    return question, (answers[0], answers[1]), int(len(special) - 1 - np.flatnonzero(~special)[-1])


def build_p5(fields: Sequence[FieldMeta], config: Config, embedding_device: str | None = None,
             lookup_device: torch.device | None = None) -> P5 | P5Generative:
    """The "p5" architecture (cp_dist.models): config.prompt.plm answering the click question, in
    the generative form for an encoder-decoder, the cloze form otherwise."""
    name, layers = config.prompt.plm, config.prompt.plm_layers
    tokenizer = load_tokenizer(name)
    pad_token_id = tokenizer.pad_token_id or 0
    if is_encoder_decoder(name):
        question, answers, suffix_length = question_tokens(tokenizer, cloze=False)
        return P5Generative(load_seq2seq_lm(name, layers), question, answers, suffix_length, pad_token_id)
    masked_lm, _ = load_masked_lm(name, layers)
    question, answers, suffix_length = question_tokens(tokenizer)
    return P5(PromptedEncoder(masked_lm), question, answers, suffix_length, pad_token_id)
