"""The registry of CTR backbones: the paper's ten baselines, one small module each."""

from __future__ import annotations

from cp_dist.registry import Registry

BACKBONES: Registry = Registry("backbone", {
    "fm": "cp_dist.ctr.backbones.fm:FM",
    "dnn": "cp_dist.ctr.backbones.dnn:DNN",
    "deepfm": "cp_dist.ctr.backbones.deepfm:DeepFM",
    "xdeepfm": "cp_dist.ctr.backbones.xdeepfm:XDeepFM",
    "ipnn": "cp_dist.ctr.backbones.ipnn:IPNN",
    "dcn": "cp_dist.ctr.backbones.dcn:DCN",
    "autoint": "cp_dist.ctr.backbones.autoint:AutoInt",
    "fignn": "cp_dist.ctr.backbones.fignn:FiGNN",
    "fgcnn": "cp_dist.ctr.backbones.fgcnn:FGCNN",
    "dcnv2": "cp_dist.ctr.backbones.dcnv2:DCNv2",
})
