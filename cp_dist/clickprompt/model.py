"""ClickPrompt: the CTR model generates the prompts of a language model (the paper's sections 3-5).

One forward runs the CTR backbone once: its representation q both feeds the prompt generator and
(when finetuning with the PLM) gives y_ctr. The prediction is sigmoid(a * y_ctr + (1 - a) * y_plm)
with a = sigmoid(fusion_logit), so a stays in (0, 1), starts at 0.5 and is never weight-decayed.

`prompts_from` says whose prompts the text is read with: the row's own ("own"), another row's of
the same batch ("shuffled": a fixed derangement), or none. The alignment diagnostics compare them:
prompts that carry nothing about their row leave "own" and "shuffled" equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from cp_dist.clickprompt.generator import PromptGenerator
from cp_dist.config import Config, PromptConfig
from cp_dist.ctr.layers import init_linear_layers
from cp_dist.ctr.model import CTRModel
from cp_dist.data.meta import FieldMeta
from cp_dist.errors import UserError
from cp_dist.plm.encoder import PromptedEncoder, load_masked_lm

POOLINGS = ("mean", "cls")
#: Parameters that PA-MLM does not use and finetuning creates fresh.
FINETUNE_HEADS = ("ctr.head.", "plm_head.", "fusion_logit")
PROMPT_SOURCES = ("own", "shuffled", "none")


def derangement(rows: int, device: torch.device | None = None) -> torch.Tensor:
    """A fixed permutation of `rows` with no fixed point (for rows >= 2): row i reads the prompts of
    row derangement[i]. Random rather than a shift, because neighbouring rows often share a user."""
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(rows))
    permutation = torch.empty_like(order)
    permutation[order] = order.roll(1)
    return permutation.to(device)


class ClickPrompt(nn.Module):
    reads_text = True  # scored from the ids and the row's text

    def __init__(self, ctr: CTRModel, encoder: PromptedEncoder, config: PromptConfig):
        super().__init__()
        if config.pooling not in POOLINGS:
            raise UserError(f"prompt.pooling {config.pooling!r}: expected one of {', '.join(POOLINGS)}")
        self.ctr, self.encoder, self.pooling = ctr, encoder, config.pooling
        # No prompts (num_prompts=0) leaves two towers fused only at the logit: the paper's ablation.
        self.generator = (
            PromptGenerator(ctr.backbone.q_dim, encoder, config.num_prompts, config.placement, config.generator_hidden,
                            config.generator_input_norm)
            if config.num_prompts > 0 else None
        )
        hidden = encoder.hidden
        self.plm_head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.fusion_logit = nn.Parameter(torch.zeros(1))  # one element, not 0-d: DeepSpeed broadcasts parameters as bytes

    @property
    def fusion_weight(self) -> torch.Tensor:
        """a, the weight of the CTR side in the fused logit."""
        return torch.sigmoid(self.fusion_logit)

    def encode(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts_from: str = "own"):
        """(q, the text's last hidden states under the prompts of `prompts_from`)."""
        q = self.ctr.interact(self.ctr.embed(ids))
        prompts = None
        if self.generator is not None and prompts_from != "none":
            prompts = self.generator(q if prompts_from == "own" else q[derangement(len(q), q.device)])
        return q, self.encoder(input_ids, attention_mask, prompts)

    def forward(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                mlm_labels: torch.Tensor | None = None, mlm_tokens: torch.Tensor | None = None,
                prompts_from: str = "own", towers: bool = False) -> torch.Tensor:
        """With mlm_labels (PA-MLM; input_ids then hold the masked text): the cross-entropy on the
        selected positions, summed and divided by mlm_tokens (default: their number here; see the
        pamlm stage for data-parallel ranks). Without: the fused click logit a * y_ctr + (1 - a) * y_plm,
        or with towers=True [B, 3]: the fused logit, y_ctr and y_plm. Everything goes through forward
        so that data-parallel wrappers see every step."""
        assert prompts_from in PROMPT_SOURCES, prompts_from
        q, hidden = self.encode(ids, input_ids, attention_mask, prompts_from)
        if mlm_labels is not None:
            return self.encoder.mlm_loss(hidden, mlm_labels, mlm_tokens)
        y_ctr = self.ctr.logit(q)
        y_plm = self.plm_head(self._pool(hidden, attention_mask)).squeeze(-1)
        a = self.fusion_weight
        fused = a * y_ctr + (1 - a) * y_plm
        return torch.stack([fused, y_ctr, y_plm], dim=1) if towers else fused

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)

    def compile_language_side(self) -> None:
        """torch.compile, in place, the prompted encoder and the prompt generator: the with-PLM
        steps' dense compute. Parameter names do not change, so checkpoints are unaffected."""
        self.encoder.compile()
        if self.generator is not None:
            self.generator.compile()

    def plm_parameters(self) -> Iterator[nn.Parameter]:
        """The language model's own parameters: encoder and masked-LM head."""
        return self.encoder.masked_lm.parameters()

    def mlm_head_only_parameters(self) -> list[nn.Parameter]:
        return self.encoder.mlm_head_only_parameters()


def freeze(parameters) -> None:
    for parameter in parameters:
        parameter.requires_grad_(False)


def prepare_for_pretraining(model: ClickPrompt) -> None:
    """PA-MLM trains everything it uses; the finetuning heads are unused, so they are frozen
    (data-parallel wrappers reject parameters that get no gradient)."""
    freeze(p for n, p in model.named_parameters() if n.startswith(FINETUNE_HEADS))


def prepare_for_finetuning(model: ClickPrompt, plm_lr: float) -> None:
    """The MLM head is unused when finetuning. plm_lr == 0 freezes the language model and nothing
    else: the CTR model, the generator and the heads still train."""
    freeze(model.mlm_head_only_parameters())
    if plm_lr == 0:
        freeze(model.encoder.encoder.parameters())


def build_clickprompt(fields: Sequence[FieldMeta], config: Config, embedding_device: str | None = None,
                      lookup_device: torch.device | None = None) -> ClickPrompt:
    """The "clickprompt" architecture (cp_dist.models): the CTR model prompting config.prompt.plm.
    `fresh_mlm_head` records whether the PLM came without an MLM head (one was initialised)."""
    ctr = CTRModel(fields, config.ctr, embedding_device, lookup_device)
    masked_lm, fresh_head = load_masked_lm(config.prompt.plm, config.prompt.plm_layers)
    model = ClickPrompt(ctr, PromptedEncoder(masked_lm), config.prompt)
    for part in (model.ctr, model.generator, model.plm_head):  # not the PLM: it keeps its own weights
        if part is not None:
            init_linear_layers(part, config.train.init)
    model.fresh_mlm_head = fresh_head
    return model
