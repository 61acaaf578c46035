"""The model architectures a run trains and a checkpoint holds, by name.

A checkpoint records its architecture, so evaluation and serving rebuild the model from the
checkpoint alone. Each entry builds a model from the data's fields and a config:
build(fields, config, embedding_device=None, lookup_device=None), tables on `embedding_device`
("meta" defers them to TorchRec's sharding).
"""

from __future__ import annotations

from cp_dist.registry import Registry

ARCHITECTURES: Registry = Registry("architecture", {
    "ctr": "cp_dist.ctr.model:build_ctr_model",
    "clickprompt": "cp_dist.clickprompt.model:build_clickprompt",
    "ctrl": "cp_dist.baselines.ctrl:build_ctrl",
    "ctr_bert": "cp_dist.baselines.ctr_bert:build_ctr_bert",
    "ptab": "cp_dist.baselines.ptab:build_ptab",
    "p5": "cp_dist.baselines.p5:build_p5",
})
