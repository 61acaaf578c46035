"""P5 (a baseline; cp_dist.baselines.p5): the PLM answers "<row text> Clicked?" with yes or no (an
encoder-decoder's first decoded token, or an encoder's MLM head at a [MASK]), finetuned on the click
label with ClickPrompt's finetuning budget (the finetune section)."""

from __future__ import annotations

from cp_dist.training.stages.clickprompt import LanguageModelStage


class P5Finetune(LanguageModelStage):
    name = "p5"
    description = ("P5 (baseline): the PLM answers 'Clicked?' with yes or no (an encoder-decoder generates it, an "
                   "encoder's MLM head fills '[MASK]')")
    section = "finetune"
    architecture = "p5"
