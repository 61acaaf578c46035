"""FGCNN (Liu et al. 2019): convolutions over the field axis generate new feature embeddings
(convolution -> max-pooling -> recombination); raw and new features then go through IPNN."""

import torch
from torch import nn

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.layers import MLP, num_pairs, pairwise_inner_products


class FeatureGeneration(nn.Module):
    def __init__(self, num_fields: int, dim: int, channels: list[int], kernel: int, new_maps: int):
        super().__init__()
        self.dim = dim
        self.convs, self.recombine = nn.ModuleList(), nn.ModuleList()
        rows, in_channels, self.new_fields = num_fields, 1, 0
        for out_channels in channels:
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, (kernel, 1), padding=(kernel // 2, 0)),
                    nn.Tanh(),
                    nn.MaxPool2d((2, 1), ceil_mode=True),
                )
            )
            rows = -(-rows // 2)
            self.recombine.append(nn.Sequential(nn.Linear(out_channels * rows * dim, new_maps * rows * dim), nn.Tanh()))
            self.new_fields += new_maps * rows
            in_channels = out_channels

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """[B, F, D] -> [B, new_fields, D]"""
        maps, generated = fields.unsqueeze(1), []
        for conv, recombine in zip(self.convs, self.recombine):
            maps = conv(maps)
            generated.append(recombine(maps.flatten(1)).view(fields.shape[0], -1, self.dim))
        return torch.cat(generated, dim=1)


class FGCNN(Backbone):
    def __init__(self, num_fields: int, dim: int, config: CTRConfig):
        super().__init__(num_fields, dim, config)
        self.generate = FeatureGeneration(num_fields, dim, config.conv_channels, config.conv_kernel, config.conv_new_maps)
        total = num_fields + self.generate.new_fields
        self.mlp = MLP(total * dim + num_pairs(total), config.mlp, config.dropout)
        self.q_dim = self.mlp.out_dim

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        every = torch.cat([fields, self.generate(fields)], dim=1)
        return self.mlp(torch.cat([every.flatten(1), pairwise_inner_products(every)], dim=1))
