"""One typed configuration, loaded from YAML presets (cp_dist/presets/*.yaml) plus overrides.

A preset is a YAML file with the sections below; unknown keys are errors that name the file and
the key, so a typo never silently falls back to a default. `extends: <preset>` starts from another
preset and overrides it key by key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cp_dist.errors import UserError

PRESETS_DIR = Path(__file__).with_name("presets")
PRECISIONS = ("fp32", "bf16")
SHARDINGS = ("auto", "table_wise", "column_wise", "row_wise")
ENGINES = ("plain", "hybrid")


@dataclass
class CTRConfig:
    """The CTR backbone. Each backbone reads the fields it needs and ignores the others."""

    model: str = "dcnv2"
    embedding_dim: int = 16
    mlp: list[int] = field(default_factory=lambda: [256, 256, 256])
    dropout: float = 0.0
    cross_layers: int = 3  # DCN, DCNv2
    cin_layers: list[int] = field(default_factory=lambda: [64, 64])  # xDeepFM
    attention_layers: int = 3  # AutoInt
    attention_heads: int = 2
    attention_dim: int = 32
    gnn_steps: int = 3  # FiGNN
    conv_channels: list[int] = field(default_factory=lambda: [8, 8])  # FGCNN
    conv_kernel: int = 3
    conv_new_maps: int = 2


def choice(default: Any, choices: tuple) -> Any:
    """A field that takes one of `choices`; a preset or override with another value is an error."""
    return field(default=default, metadata={"choices": choices})


@dataclass
class StageConfig:
    """What every training stage reads from its section (see cp_dist.training.stages)."""

    epochs: int = 1
    max_steps: int | None = None  # stop after this many steps (None: every epoch in full)
    global_batch_size: int = 256
    dense_lr: float = 1e-3  # AdamW: dense CTR layers, the prompt generator, heads
    embedding_lr: float = 0.05  # fused row-wise Adagrad on the tables
    weight_decay: float = 0.0  # never on biases, LayerNorm weights or the fusion weight
    patience: int = 1  # epochs without a better validation AUC before stopping (stages that validate)
    # the tables' optimizer, fused into backward: row-wise Adagrad (one accumulator per row), Adagrad, SGD
    embedding_optimizer: str = choice("rowwise_adagrad", ("rowwise_adagrad", "adagrad", "sgd"))
    # the dense learning rates: linear warm-up over this share of the run's steps, then the schedule
    warmup_ratio: float = 0.0
    schedule: str = choice("constant", ("constant", "linear", "cosine"))  # linear / cosine: decay to 0 at the end
    eval_every_steps: int = 0  # stages that evaluate without selecting (PA-MLM): also every N steps
    start_tables: bool = True  # stages that start from a checkpoint: take its embedding tables too (False: fresh)


@dataclass
class TrainConfig(StageConfig):
    """Settings of the whole run, and the CTR recipe: training a backbone, and finetuning one without the PLM."""

    global_batch_size: int = 1024
    epochs: int = 10
    patience: int = 2
    embedding_init_std: float = 0.01
    # xavier: xavier-normal weights and zero biases in every dense layer cp_dist creates (CTR model,
    # prompt generator, heads; the PLM keeps its own), as the authors do; torch: PyTorch's defaults
    init: str = choice("xavier", ("xavier", "torch"))
    seed: int = 0
    eval_batch_size: int = 8192
    # logs (where tqdm's bar, terminals only, shows nothing): a line with the epoch's step, the loss and
    # the time left, at most this often (0: only the epochs' lines)
    log_every_seconds: float = 60.0
    # the rows are cut into this many equal ranges, and every global batch (training and evaluation)
    # draws evenly from them; rank r decodes only the ranges its slice draws from: about 1/W of the
    # rows when the world size W divides it. 1: every rank decodes every row (the batches cp_dist's
    # published figures were measured with). Both batch sizes must be multiples of it.
    logical_shards: int = 1
    # parquet: SplitLoader (global batches independent of the world size, exact resume);
    # ray_data: Ray Data's streaming split across Ray Train workers (cp_dist.data.streaming: scales
    # reading out, gives up both guarantees); Ray jobs only
    batch_source: str = choice("parquet", ("parquet", "ray_data"))
    shuffle_buffer_rows: int = 65_536  # ray_data: each worker shuffles within a buffer of this many rows
    # ray_data: CPUs each read task asks for; 0 lets reads run on CPUs the trainers hold (a cluster
    # with no CPUs beside them, e.g. the smoke preset's two)
    stream_cpus: float = 1.0
    # each training id is replaced by the out-of-vocabulary index 0 with this probability, so that row
    # learns too (ids first seen after the training period map to it; PA-MLM also sees valid rows)
    oov_rate: float = 0.0
    precision: str = choice("fp32", PRECISIONS)  # bf16: autocast of the language-model steps on a GPU; fp32 weights
    compile: bool = False  # torch.compile the PLM encoder and the prompt generator (with-PLM steps)


@dataclass
class DistributedConfig:
    nproc: int = 1
    backend: str = choice("auto", ("auto", "gloo", "nccl"))  # auto: gloo on CPU, nccl on GPU
    # auto: TorchRec's planner over the model-parallel types; or one type forced
    sharding: str = choice("auto", SHARDINGS)
    # auto: with the dense layers | cpu: tables in host memory, dense layers on the GPU
    table_device: str = choice("auto", ("auto", "cpu"))
    # plain: TorchRec tables + AdamW on the replicated dense model (DDP);
    # hybrid: TorchRec tables + the dense model (PLM, generator, CTR layers) under DeepSpeed ZeRO
    engine: str = choice("plain", ENGINES)
    # hybrid engine: 0 replicated, 1 + optimizer states partitioned, 2 + gradients, 3 + parameters
    zero_stage: int = choice(2, (0, 1, 2, 3))
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states and step in host memory
    cpus_per_worker: int = 1  # Ray Train resources of one worker (one rank)
    gpus_per_worker: int = 0
    checkpoint_every_steps: int = 0  # a resume point every N steps (0: at each epoch's end only)
    max_failures: int = 0  # how often Ray restarts the workers, each time from the last resume point


@dataclass
class PromptConfig:
    """The language model and how the CTR model prompts it."""

    plm: str = "minilm"  # 'minilm' (bundled), a Hugging Face name or a local path
    plm_layers: int | None = None  # keep only the first N encoder layers (None: all); cost scales with N
    num_prompts: int = 5  # K prompts per layer
    placement: str = choice("deep", ("deep", "input"))  # per-layer prefix keys/values | input layer only
    generator_hidden: int | None = None  # None: the PLM's hidden size, as in the reference code
    # layernorm: q normalised (LayerNorm) before the generator's tanh layer. PA-MLM can grow q until
    # that tanh saturates on every row and the prompts are one constant (seed 1 of ML-1M: pre-tanh
    # |x| 54, value gap 0; README, "MovieLens-1M, offline"); none: the paper's formula
    generator_input_norm: str = choice("none", ("none", "layernorm"))
    pooling: str = choice("mean", ("mean", "cls"))  # how y_plm pools the last hidden states
    max_length: int = 128  # tokens of the row text
    # rows per evaluation batch of a model that reads the text (at most train.eval_batch_size): without
    # gradients MiniLM's 6 layers still hold about 2.3 MB a row at 64 tokens (measured), so the CTR
    # models' 8192 rows would take 19 GB
    eval_batch_size: int = 1024


@dataclass
class PAMLMConfig(StageConfig):
    """PA-MLM: everything trains; train + valid rows, never test. The defaults are the recipe measured
    on ML-100K by the masked-value gap (README, "Aligning the prompts")."""

    global_batch_size: int = 128
    plm_lr: float = 5e-5
    mlm_head_lr: float | None = 1e-3  # the MLM head's own layers (its decoder is the word embeddings); None: plm_lr
    embedding_lr: float = 0.1  # large enough that the id embeddings come to carry what the text says of them
    weight_decay: float = 0.01
    # fields: whole field values (each field with mask_probability, at least one per row); tokens: BERT's 15%
    masking: str = choice("fields", ("tokens", "fields"))
    mask_probability: float = 0.3
    # masking "fields": the fields whose values may be masked ([]: every field). Side attributes only
    # (e.g. [age, occupation, genre]) keep the id tables from being trained to spell their own ids.
    mask_fields: list[str] = field(default_factory=list)
    diagnose_rows: int = 512  # valid rows the alignment diagnostics read at each evaluation
    splits: list[str] = field(default_factory=lambda: ["train", "valid"])  # the paper's; never test


@dataclass
class FinetuneConfig(StageConfig):
    """Finetuning with the PLM; without it, `train` applies (the plain CTR recipe)."""

    epochs: int = 3
    plm_lr: float = 3e-5  # 0 freezes the PLM, and only the PLM


@dataclass
class CTRLConfig(StageConfig):
    """CTRL's contrastive pretraining (a baseline): q and the PLM's mean-pooled row embedding, each
    projected and L2-normalised, matched across the global batch (InfoNCE, both directions). The
    language model is config.prompt's (plm, plm_layers, max_length)."""

    global_batch_size: int = 128
    plm_lr: float = 5e-5
    projection_dim: int = 128
    temperature: float = 0.07
    diagnose_rows: int = 256  # valid rows of the retrieval diagnostic (chance: 1 / diagnose_rows)


@dataclass
class Config:
    ctr: CTRConfig = field(default_factory=CTRConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    pamlm: PAMLMConfig = field(default_factory=PAMLMConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ctrl: CTRLConfig = field(default_factory=CTRLConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any], source: str = "config") -> Config:
        sections = typing.get_type_hints(cls)
        built = {}
        for name, values in (payload or {}).items():
            if name not in sections:
                raise UserError(f"{source}: unknown section {name!r}; expected one of {', '.join(sections)}")
            section_type = sections[name]
            known = {f.name for f in dataclasses.fields(section_type)}
            unknown = set(values or {}) - known
            if unknown:
                raise UserError(f"{source}: unknown key {name}.{sorted(unknown)[0]}; expected one of {', '.join(sorted(known))}")
            hints = typing.get_type_hints(section_type)
            choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(section_type) if "choices" in f.metadata}
            typed = {key: _typed(value, hints[key], f"{source}: {name}.{key}") for key, value in (values or {}).items()}
            for key, value in typed.items():
                if key in choices and value not in choices[key]:
                    raise UserError(f"{source}: {name}.{key} is {value!r}; expected one of {', '.join(map(str, choices[key]))}")
            built[name] = section_type(**typed)
        return cls(**built)


def _typed(value: Any, hint: Any, where: str) -> Any:
    """value checked against a field's type hint. YAML reads 1e-5 (no dot) as a string, so a float
    field also takes a string that parses as a number; anything else of the wrong type is an error."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                continue
        if option in (int, str, bool) and type(value) is option:
            return value
        if typing.get_origin(option) is list and isinstance(value, list):
            (element,) = typing.get_args(option)
            return [_typed(item, element, f"{where}[{i}]") for i, item in enumerate(value)]
    expected = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise UserError(f"{where} is {value!r}; expected {expected}")


def eval_batch_size(config: Config, reads_text: bool) -> int:
    """Rows per evaluation batch: train.eval_batch_size, at most prompt.eval_batch_size for a model
    that reads the text."""
    return min(config.train.eval_batch_size, config.prompt.eval_batch_size) if reads_text else config.train.eval_batch_size


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(preset: str | Path, overrides: list[str] | None = None) -> Config:
    """A preset name (see preset_names()) or a YAML path, then `section.key=value` overrides."""
    path = Path(preset) if str(preset).endswith((".yaml", ".yml")) else PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise UserError(f"{path}: no such preset; expected a YAML file or one of {', '.join(preset_names())}")
    return Config.from_dict(_overridden(_read_preset(path), overrides or []), str(path))


def with_overrides(config: Config, overrides: list[str]) -> Config:
    """The config with `section.key=value` overrides applied (as --set applies them to a preset)."""
    return Config.from_dict(_overridden(config.to_dict(), overrides), "--set")


def _overridden(payload: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for override in overrides:
        key, sep, value = override.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise UserError(f"--set {override!r}: expected section.key=value, e.g. train.epochs=3")
        payload.setdefault(section, {})[name] = yaml.safe_load(value)
    return payload


def _read_preset(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise UserError(f"{path}: `extends` loops back to itself")
    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from err
    parent = payload.pop("extends", None)
    if parent is None:
        return payload
    parent_path = PRESETS_DIR / f"{parent}.yaml" if not str(parent).endswith((".yaml", ".yml")) else path.parent / parent
    if not parent_path.is_file():
        raise UserError(f"{path}: extends {parent!r}, which is neither a preset nor a YAML file beside it")
    merged = _read_preset(parent_path, (*seen, path))
    for section, values in payload.items():
        merged.setdefault(section, {}).update(values or {})
    return merged
