"""The registry of CTR backbones: the paper's ten baselines, one small module each."""

from __future__ import annotations

from cp_dist.config import CTRConfig
from cp_dist.ctr.backbones.autoint import AutoInt
from cp_dist.ctr.backbones.base import Backbone
from cp_dist.ctr.backbones.dcn import DCN
from cp_dist.ctr.backbones.dcnv2 import DCNv2
from cp_dist.ctr.backbones.deepfm import DeepFM
from cp_dist.ctr.backbones.dnn import DNN
from cp_dist.ctr.backbones.fgcnn import FGCNN
from cp_dist.ctr.backbones.fignn import FiGNN
from cp_dist.ctr.backbones.fm import FM
from cp_dist.ctr.backbones.ipnn import IPNN
from cp_dist.ctr.backbones.xdeepfm import XDeepFM
from cp_dist.data.errors import DataError

BACKBONES: dict[str, type[Backbone]] = {
    "fm": FM,
    "dnn": DNN,
    "deepfm": DeepFM,
    "xdeepfm": XDeepFM,
    "ipnn": IPNN,
    "dcn": DCN,
    "autoint": AutoInt,
    "fignn": FiGNN,
    "fgcnn": FGCNN,
    "dcnv2": DCNv2,
}


def build_backbone(config: CTRConfig, num_fields: int) -> Backbone:
    try:
        backbone = BACKBONES[config.model]
    except KeyError:
        raise DataError(f"ctr.model {config.model!r}: unknown backbone; expected one of {', '.join(BACKBONES)}") from None
    return backbone(num_fields, config.embedding_dim, config)
