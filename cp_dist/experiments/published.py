"""The paper's Table 2 as published (test AUC, LogLoss; DCNv2 the default backbone, RoBERTa-base the
PLM), the one place cp_dist keeps it, so that the tables we measure print it beside our figures.

Keyed by cp_dist's names: data sets as `cp-dist data prepare --dataset` spells them, rows as the
backbones (cp_dist.ctr.backbones) and the compare variants (cp_dist.experiments.variants) are named.
The authors' splits and preprocessing are only partly documented, so a difference in absolute AUC
says as much about the setting as about the model; ratios measured side by side say more.
"""

from __future__ import annotations

_ROWS = ("fm", "dnn", "deepfm", "xdeepfm", "ipnn", "dcn", "autoint", "fignn", "fgcnn", "dcnv2",
         "ctr-bert", "p5", "ptab", "ctrl", "clickprompt-no-plm", "clickprompt")
_COLUMNS = ("ml-1m", "bookcrossing", "amazon-toys", "goodreads")
# one line per row of the paper's Table 2: (AUC, LogLoss) per data set, in _COLUMNS' order
_TABLE2 = (
    ((0.8371, 0.4090), (0.7871, 0.5202), (0.6668, 0.4059), (0.7614, 0.5190)),  # FM
    ((0.8413, 0.3944), (0.7940, 0.5124), (0.6686, 0.3982), (0.7685, 0.5082)),  # DNN
    ((0.8443, 0.3915), (0.7959, 0.5106), (0.6692, 0.3978), (0.7690, 0.5136)),  # DeepFM
    ((0.8435, 0.3950), (0.7943, 0.5122), (0.6681, 0.3967), (0.7697, 0.5072)),  # xDeepFM
    ((0.8437, 0.3926), (0.7953, 0.5111), (0.6687, 0.3980), (0.7722, 0.5148)),  # IPNN
    ((0.8423, 0.3964), (0.7952, 0.5116), (0.6688, 0.3964), (0.7693, 0.5074)),  # DCN
    ((0.8399, 0.4004), (0.7954, 0.5113), (0.6678, 0.3977), (0.7682, 0.5084)),  # AutoInt
    ((0.8399, 0.3991), (0.7970, 0.5105), (0.6700, 0.3947), (0.7667, 0.5094)),  # FiGNN
    ((0.8416, 0.3957), (0.7985, 0.5082), (0.6675, 0.3978), (0.7705, 0.5064)),  # FGCNN
    ((0.8439, 0.3954), (0.7970, 0.5096), (0.6701, 0.3961), (0.7711, 0.5059)),  # DCNv2
    ((0.8296, 0.4208), (0.7848, 0.5268), (0.6649, 0.3988), (0.7457, 0.5292)),  # CTR-BERT
    ((0.8173, 0.4171), (0.7695, 0.5360), (0.6470, 0.4018), (0.7367, 0.5531)),  # P5
    ((0.8353, 0.4081), (0.7979, 0.5208), (0.6685, 0.3995), (0.7566, 0.5203)),  # PTab
    ((0.8453, 0.3932), (0.7992, 0.5092), (0.6704, 0.3960), (0.7735, 0.5038)),  # CTRL
    ((0.8467, 0.3939), (0.8013, 0.5051), (0.6719, 0.3933), (0.7744, 0.5034)),  # ClickPrompt w/o PLM
    ((0.8499, 0.3905), (0.8030, 0.5037), (0.6755, 0.3890), (0.7755, 0.5022)),  # ClickPrompt with PLM
)
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    dataset: {row: figures[column] for row, figures in zip(_ROWS, _TABLE2)} for column, dataset in enumerate(_COLUMNS)
}


def table2_figures(dataset: str, row: str) -> tuple[float, float] | None:
    """(AUC, LogLoss) of `row` on `dataset` in the paper's Table 2; None where the paper has none
    (ML-100K, an ablation, a backbone under settings other than the paper's)."""
    return TABLE2.get(dataset, {}).get(row)
