"""Each backbone's interaction against its paper's formula, written out with loops on small tensors."""

from __future__ import annotations

import itertools

import torch

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones import BACKBONES

FIELDS, DIM = 4, 3


def _fields(seed: int = 0) -> torch.Tensor:
    return torch.randn(5, FIELDS, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _backbone(name: str, **settings):
    torch.manual_seed(0)
    return BACKBONES[name](FIELDS, DIM, CTRConfig(model=name, embedding_dim=DIM, mlp=[8], **settings)).double()


def _pairwise(fields: torch.Tensor) -> torch.Tensor:
    """FM's second-order vector: sum over i < j of e_i * e_j."""
    return sum(fields[:, i] * fields[:, j] for i, j in itertools.combinations(range(FIELDS), 2))


def test_fm_is_the_embeddings_and_their_pairwise_products() -> None:
    fields = _fields()
    q = _backbone("fm")(fields)
    torch.testing.assert_close(q, torch.cat([fields.flatten(1), _pairwise(fields)], 1))


def test_deepfm_adds_an_mlp_beside_fm() -> None:
    fields, backbone = _fields(), _backbone("deepfm")
    q = backbone(fields)
    width = FIELDS * DIM
    torch.testing.assert_close(q[:, : width + DIM], torch.cat([fields.flatten(1), _pairwise(fields)], 1))
    torch.testing.assert_close(q[:, width + DIM :], backbone.mlp(fields.flatten(1)))


def test_ipnn_feeds_every_pair_s_inner_product() -> None:
    fields, backbone = _fields(), _backbone("ipnn")
    products = torch.stack([(fields[:, i] * fields[:, j]).sum(1) for i, j in itertools.combinations(range(FIELDS), 2)], 1)
    torch.testing.assert_close(backbone(fields), backbone.mlp(torch.cat([fields.flatten(1), products], 1)))


def test_dcnv2_cross_layers() -> None:
    fields, backbone = _fields(), _backbone("dcnv2", cross_layers=2)
    x0 = fields.flatten(1)
    x = x0
    for layer in backbone.cross:  # x_{l+1} = x0 * (W_l x_l + b_l) + x_l
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    torch.testing.assert_close(backbone(fields), torch.cat([x, backbone.mlp(x0)], 1))
    with torch.no_grad():
        for layer in backbone.cross:
            layer.weight.normal_()
    assert not torch.allclose(backbone(fields)[:, : x0.shape[1]], x), "the cross output depends on the cross weights"


def test_dcn_cross_layers() -> None:
    fields, backbone = _fields(), _backbone("dcn", cross_layers=2)
    x0 = fields.flatten(1)
    x = x0
    for w, b in zip(backbone.weights, backbone.biases):  # x_{l+1} = x0 (x_l . w_l) + b_l + x_l
        x = torch.stack([x0[r] * (x[r] @ w) for r in range(len(x0))]) + b + x
    torch.testing.assert_close(backbone(fields)[:, : x0.shape[1]], x)


def test_cin_layers_compress_outer_products() -> None:
    fields, backbone = _fields(), _backbone("xdeepfm", cin_layers=[2, 3])
    hidden, pooled = fields, []
    for conv in backbone.cin.convs:  # X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j), then sum-pooled
        weight, bias = conv.weight[:, :, 0], conv.bias
        rows = hidden.shape[1]
        hidden = torch.stack([
            sum(weight[h, i * FIELDS + j] * hidden[:, i] * fields[:, j] for i in range(rows) for j in range(FIELDS)) + bias[h]
            for h in range(weight.shape[0])], 1)
        pooled.append(hidden.sum(2))
    torch.testing.assert_close(backbone.cin(fields), torch.cat(pooled, 1))
