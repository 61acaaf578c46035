"""Prompt fusion against a hand-written reference, for a BERT and a RoBERTa configuration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cp_dist.clickprompt.diagnostics import generator_saturation
from cp_dist.clickprompt.generator import PromptGenerator
from cp_dist.clickprompt.model import ClickPrompt
from cp_dist.config import CTRConfig, PromptConfig
from cp_dist.ctr.backbones import BACKBONES
from cp_dist.ctr.model import CTRModel
from cp_dist.data.meta import FieldMeta
from cp_dist.distributed.tables import initialize_tables
from cp_dist.plm.encoder import PromptedEncoder, Prompts, load_masked_lm, masked_lm_from_config, text_position_ids

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 120}
FAMILIES = ["bert", "roberta"]


def _tiny(model_type: str) -> PromptedEncoder:
    torch.manual_seed(0)
    model = masked_lm_from_config(model_type, attn_implementation="eager", hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, pad_token_id=1, **TINY).eval()
    return PromptedEncoder(model)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, TINY["vocab_size"], (3, 7))
    mask = torch.ones_like(ids)
    ids[2, 5:], mask[2, 5:] = 1, 0  # a padded row
    return ids, mask


def _reference(encoder: PromptedEncoder, ids, mask, prefix=None, vectors=None) -> torch.Tensor:
    """Every layer written out: text queries attend to [prompt slots ; text], text positions unshifted."""
    base = encoder.encoder
    positions = text_position_ids(ids, mask, encoder.masked_lm.config)
    hidden = base.embeddings(input_ids=ids, position_ids=positions)
    count = 0
    if vectors is not None:
        count = vectors.shape[1]
        extra = base.embeddings.position_embeddings(positions[:, :1].expand(-1, count)) + base.embeddings.token_type_embeddings(
            torch.zeros(ids.shape[0], count, dtype=torch.long))
        hidden = torch.cat([base.embeddings.dropout(base.embeddings.LayerNorm(vectors + extra)), hidden], 1)
    keys_mask = torch.cat([torch.ones(ids.shape[0], count or (prefix[0].shape[3] if prefix else 0)), mask.float()], 1)
    batch, heads, size = ids.shape[0], encoder.num_heads, encoder.head_dim
    for layer_index, layer in enumerate(base.encoder.layer):
        attention = layer.attention.self
        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], heads, size).transpose(1, 2)

        query, key, value = split(attention.query(hidden)), split(attention.key(hidden)), split(attention.value(hidden))
        if prefix is not None:
            key = torch.cat([prefix[0][layer_index], key], 2)
            value = torch.cat([prefix[1][layer_index], value], 2)
        scores = (query @ key.transpose(-1, -2)) / size**0.5
        scores = scores.masked_fill(keys_mask[:, None, None, :] == 0, float("-inf"))
        context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, hidden.shape[1], heads * size)
        attended = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden[:, count:]


@pytest.mark.parametrize("family", FAMILIES)
def test_deep_prefix_equals_reference_attention(family: str) -> None:
    encoder = _tiny(family)
    ids, mask = _batch()
    shape = (encoder.num_layers, 3, encoder.num_heads, 4, encoder.head_dim)
    keys, values = torch.randn(shape), torch.randn(shape)
    got = encoder(ids, mask, Prompts(keys=keys, values=values))
    expected = _reference(encoder, ids, mask, prefix=(keys, values))
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_input_prompts_equal_reference_attention(family: str) -> None:
    encoder = _tiny(family)
    ids, mask = _batch()
    vectors = torch.randn(3, 2, encoder.hidden)
    got = encoder(ids, mask, Prompts(vectors=vectors))
    expected = _reference(encoder, ids, mask, vectors=vectors)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_positions_are_not_shifted(family: str) -> None:
    """With no prompts, our explicit positions reproduce the model's own default ones exactly."""
    encoder = _tiny(family)
    ids, mask = _batch()
    default = encoder.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(encoder(ids, mask)[mask.bool()], default[mask.bool()], rtol=0, atol=0)


def test_gradients_reach_generator_and_ctr_embeddings() -> None:
    torch.manual_seed(0)
    fields = [FieldMeta(f"f{k}", f"F{k}", "user", 10, 0) for k in range(3)]
    ctr = CTRModel(fields, CTRConfig(model="dcnv2", embedding_dim=8, mlp=[16], cross_layers=1))
    initialize_tables(ctr, seed=0, std=0.1)
    encoder = _tiny("bert")
    generator = PromptGenerator(ctr.backbone.q_dim, encoder, num_prompts=3)
    ids, mask = _batch()
    row_ids = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    prompts = generator(ctr.interact(ctr.embed(row_ids)))
    logits = encoder.mlm_logits(encoder(ids, mask, prompts))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    table = ctr.embedding.ebc.embedding_bags["f0"].weight.grad
    assert table[[1, 4, 7]].abs().sum(1).gt(0).all() and table[[0, 2, 3]].abs().sum() == 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    # Output rows are laid out [K, key/value, layer, hidden]: every layer's prefix gets a gradient.
    per_layer = generator.output.weight.grad.view(3, 2, encoder.num_layers, encoder.hidden, -1)
    assert per_layer.abs().sum((0, 1, 3, 4)).gt(0).all()


def test_generator_size_is_explicit() -> None:
    encoder = _tiny("bert")
    deep = PromptGenerator(q_dim=10, encoder=encoder, num_prompts=5)
    hidden, layers = encoder.hidden, encoder.num_layers
    assert deep.num_parameters == (10 * hidden + hidden) + (hidden * 5 * 2 * layers * hidden + 5 * 2 * layers * hidden)
    prompts = deep(torch.randn(4, 10))
    assert prompts.keys.shape == prompts.values.shape == (layers, 4, encoder.num_heads, 5, encoder.head_dim)
    narrow = PromptGenerator(q_dim=10, encoder=encoder, num_prompts=5, placement="input", hidden=8)
    assert narrow(torch.randn(4, 10)).vectors.shape == (4, 5, hidden) and narrow.num_parameters < deep.num_parameters


@pytest.mark.parametrize("input_norm", ["none", "layernorm"])
def test_generator_computes_the_papers_formula(input_norm: str) -> None:
    """Prompt k of layer l, key or value, head h: rows of W2 tanh(W1 norm(q) + b1) + b2, by hand."""
    torch.manual_seed(0)
    encoder = _tiny("bert")
    generator = PromptGenerator(q_dim=10, encoder=encoder, num_prompts=3, input_norm=input_norm)
    q = torch.randn(4, 10)
    normed = torch.nn.functional.layer_norm(q, (10,)) if input_norm == "layernorm" else q  # fresh LayerNorm: 1 and 0
    first, second = generator.shared[-2], generator.output
    flat = torch.tanh(normed @ first.weight.T + first.bias) @ second.weight.T + second.bias
    prompts = generator(q)
    heads, size, hidden = encoder.num_heads, encoder.head_dim, encoder.hidden
    for k, kind, layer, head in [(0, 0, 0, 0), (2, 1, encoder.num_layers - 1, heads - 1), (1, 0, 1, 1)]:
        start = ((k * 2 + kind) * encoder.num_layers + layer) * hidden + head * size
        got = (prompts.keys if kind == 0 else prompts.values)[layer, :, head, k]
        torch.testing.assert_close(got, flat[:, start:start + size])


def test_a_normalised_q_keeps_the_prompts_apart_where_the_tanh_would_saturate() -> None:
    """q far from 0 with little spread across rows (what PA-MLM made of seed 1's on ML-1M): the paper's
    tanh saturates and every row gets the same prompts; a LayerNorm in front keeps them apart."""
    torch.manual_seed(0)
    encoder = _tiny("bert")
    q = 200 + 0.5 * torch.randn(16, 10)
    spread = {norm: PromptGenerator(10, encoder, 3, input_norm=norm)(q).keys.std(1).mean().item()
              for norm in ("none", "layernorm")}
    assert spread["none"] < 1e-3 < 0.05 < spread["layernorm"], spread


def test_the_saturation_diagnostic_sees_a_generator_stuck_at_one_constant() -> None:
    torch.manual_seed(0)
    fields = [FieldMeta(f"f{k}", f"F{k}", "user", 10, 0) for k in range(3)]
    ctr = CTRModel(fields, CTRConfig(model="dcnv2", embedding_dim=8, mlp=[16], cross_layers=1))
    initialize_tables(ctr, seed=0, std=0.1)
    model = SimpleNamespace(ctr=ctr, generator=PromptGenerator(ctr.backbone.q_dim, _tiny("bert"), num_prompts=3))
    batches = [SimpleNamespace(ids=torch.randint(1, 10, (32, 3)))]
    healthy = generator_saturation(model, batches)
    assert healthy["generator_saturated_share"] < 0.1 and healthy["generator_hidden_std"] > 0.01, healthy
    with torch.no_grad():
        model.generator.shared[0].bias.fill_(1e4)  # every unit pinned at tanh = 1, whatever q
    stuck = generator_saturation(model, batches)
    assert stuck["generator_saturated_share"] == 1.0 and stuck["generator_hidden_std"] == 0.0, stuck
    assert stuck["q_abs_mean"] == healthy["q_abs_mean"] > 0


def test_bundled_minilm_gets_a_fresh_head_tied_to_its_word_embeddings() -> None:
    model, fresh = load_masked_lm("minilm")
    assert fresh
    encoder = PromptedEncoder(model)
    assert encoder.num_layers == 6 and encoder.hidden == 384
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_prompts_both_families(backbone: str, family: str) -> None:
    """For each registered backbone: the PA-MLM loss alone reaches the tables through the prompts
    (and differs between own and shuffled prompts), and the fused click logit trains the rest."""
    torch.manual_seed(0)
    fields = [FieldMeta(f"f{k}", f"F{k}", "user", 12, 0) for k in range(4)]
    ctr = CTRModel(fields, CTRConfig(model=backbone, embedding_dim=8, mlp=[16], cross_layers=1, cin_layers=[4],
                                     attention_layers=1, attention_dim=8, gnn_steps=1, conv_channels=[2]))
    initialize_tables(ctr, seed=0, std=0.1)
    model = ClickPrompt(ctr, _tiny(family), PromptConfig(num_prompts=2))
    ids = torch.randint(0, 12, (3, 4))
    tokens, mask = _batch()
    labels = torch.full_like(tokens, -100)
    labels[:, 2] = tokens[:, 2]
    mlm = model(ids, tokens, mask, mlm_labels=labels)
    mlm.backward()
    assert ctr.embedding.ebc.embedding_bags["f0"].weight.grad.abs().sum() > 0, "the MLM loss alone reaches the tables"
    assert model.ctr.head.weight.grad is None and model.plm_head[0].weight.grad is None
    with torch.no_grad():
        assert model(ids, tokens, mask, mlm_labels=labels, prompts_from="shuffled") != mlm, "the prompts depend on the row"
    model.zero_grad()
    model(ids, tokens, mask).sum().backward()
    assert model.fusion_logit.grad.abs() > 0 and model.ctr.head.weight.grad.abs().sum() > 0
    assert model.plm_head[0].weight.grad.abs().sum() > 0


def test_keeping_the_first_layers(tmp_path) -> None:
    saved = _tiny("bert").masked_lm
    saved.save_pretrained(tmp_path)
    model, _ = load_masked_lm(str(tmp_path), num_layers=1)
    assert PromptedEncoder(model).num_layers == 1
    torch.testing.assert_close(model.bert.encoder.layer[0].state_dict(), saved.bert.encoder.layer[0].state_dict())
