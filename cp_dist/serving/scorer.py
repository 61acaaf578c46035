"""Scoring raw feature dicts with a finished run, and exporting the CTR-only model.

A request is a list of candidates, each a dict from field name to its raw value (the readable value
of the prepared data, e.g. {"gender": "male", "movie_title": "Wag the Dog", ...}). Values go through
the training vocabularies (unknown values -> index 0, the out-of-vocabulary row, as in training);
a missing field is an error that names it. The served CTR model is the plain backbone with its
tables as one nn.Embedding (DenseFieldEmbedding), so it runs and exports without TorchRec's kernels.
With-PLM runs also render the row's text and tokenize it, which is part of their serving cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from cp_dist.clickprompt.model import ClickPrompt
from cp_dist.ctr.embedding import DenseFieldEmbedding
from cp_dist.ctr.model import CTRModel
from cp_dist.data.meta import VOCAB_FILE, DatasetMeta, FieldMeta
from cp_dist.data.text import pad_token_lists, render_text
from cp_dist.errors import UserError
from cp_dist.pretrained import load_tokenizer
from cp_dist.training.finished import load_run

Row = Mapping[str, object]


class ValueIndex(dict):
    """value -> index; a value never seen in training is `default` (index 0). Lookups of strings,
    the vocabulary's own type, stay in C; only a miss runs Python, to try a value's string form
    (25 for "25")."""

    def __init__(self, pairs=(), default: object = 0):
        super().__init__(pairs)
        self.default = default

    def __missing__(self, value: object) -> object:
        return self.default if isinstance(value, str) else self.get(str(value), self.default)


def is_hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class Vocabularies:
    """Raw value -> vocabulary index for every field. Plain dicts: a request's few thousand lookups
    cost less through them than through a columnar call, which would hash the whole vocabulary
    (perf/bench_serve.py's 'inputs' column)."""

    def __init__(self, fields: Sequence[FieldMeta], indices: Mapping[str, Mapping[str, int]]):
        self.fields = list(fields)
        self._indices = {name: ValueIndex(index) for name, index in indices.items()}  # index 0: OOV

    @classmethod
    def load(cls, data_dir: Path, meta: DatasetMeta | None = None) -> Vocabularies:
        meta = meta or DatasetMeta.load(data_dir)
        table = pq.read_table(data_dir / VOCAB_FILE, columns=["field", "index", "value"])
        indices: dict[str, dict[str, int]] = {f.name: {} for f in meta.fields}
        for field, index, value in zip(*(table[c].to_pylist() for c in ("field", "index", "value"))):
            if index > 0 and field in indices:
                indices[field][value] = index
        return cls(meta.fields, indices)

    def _missing(self, rows: Sequence[Row], field: str) -> UserError:
        where = next(i for i, row in enumerate(rows) if field not in row)
        expected = ", ".join(f.name for f in self.fields)
        return UserError(f"candidate {where} has no field {field!r}; expected all of {expected}")

    def encode(self, rows: Sequence[Row]) -> np.ndarray:
        """[B, F] int64 indices; values never seen in training map to 0. Values compare as strings."""
        ids = np.empty((len(self.fields), len(rows)), dtype=np.int64)
        for column, field in enumerate(self.fields):
            lookup = self._indices[field.name].__getitem__  # map() over it keeps the loop in C
            try:
                ids[column] = np.fromiter(map(lookup, map(itemgetter(field.name), rows)), np.int64, len(rows))
            except KeyError:
                raise self._missing(rows, field.name) from None
            except TypeError:  # an unhashable value: a list, a dict
                where = next(i for i, row in enumerate(rows) if not is_hashable(row[field.name]))
                raise UserError(f"candidate {where}, field {field.name!r}: a {type(rows[where][field.name]).__name__} "
                                "value; expected one value (a string or a number)") from None
        return ids.T.copy()

    def index(self, field: str) -> ValueIndex:
        """One field's value -> index (0: never seen in training)."""
        return self._indices[field]

    def text_columns(self, rows: Sequence[Row]) -> pa.Table:
        """The rows' readable values as the text template's columns."""
        try:
            return pa.table({f.text_column: [str(row[f.name]) for row in rows] for f in self.fields})
        except KeyError as err:
            raise self._missing(rows, err.args[0]) from None


def servable_ctr(model: CTRModel) -> CTRModel:
    """The CTR model with its TorchRec tables replaced by one plain embedding (same numbers)."""
    model.embedding = DenseFieldEmbedding.from_tables(model.embedding)
    return model.eval()


class Scorer:
    """Click probabilities for raw candidates, from a train-ctr or finetune run."""

    def __init__(self, model: nn.Module, vocabularies: Vocabularies, device: torch.device,
                 tokenizer=None, max_length: int = 128):
        self.model, self.vocabularies, self.device = model.to(device), vocabularies, device
        self.tokenizer, self.max_length = tokenizer, max_length

    @classmethod
    def from_run(cls, run_dir: Path, data_dir: Path, device: torch.device | str = "cpu") -> Scorer:
        meta = DatasetMeta.load(data_dir)
        run = load_run(run_dir, data_dir)
        model, reads_text = run.model, run.model.reads_text
        if getattr(model, "text_sides", None):
            raise UserError(f"{run_dir}: a {run.index['architecture']} model reads one text per side "
                            f"({', '.join(model.text_sides)}); serving reads the row text. Its training run's "
                            "metrics.json and `cp-dist evaluate` give its test metrics")
        servable_ctr(model.ctr if isinstance(model, ClickPrompt) else model)
        tokenizer = None
        if reads_text:
            if meta.tokenizer is None:
                raise UserError(f"{data_dir}: a with-PLM run needs the tokenizer the data was tokenized with")
            tokenizer = load_tokenizer(meta.tokenizer["name"])
        max_length = meta.tokenizer["max_length"] if meta.tokenizer else 128
        return cls(model, Vocabularies.load(data_dir, meta), torch.device(device), tokenizer, max_length)

    @property
    def reads_text(self) -> bool:
        return self.tokenizer is not None

    def inputs(self, rows: Sequence[Row]) -> tuple[torch.Tensor, ...]:
        """The model's inputs for a request: ids, and for a with-PLM model token ids and mask."""
        ids = torch.from_numpy(self.vocabularies.encode(rows)).to(self.device)
        if not self.reads_text:
            return (ids,)
        return ids, *self.tokens(self.vocabularies.text_columns(rows))

    def tokens(self, text_columns: pa.Table, fields: Sequence[FieldMeta] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask of rows given as the text template's columns; the text of
        `fields` (default: every field)."""
        texts = render_text(text_columns, fields or self.vocabularies.fields).to_pylist()
        tokens = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        input_ids, mask = pad_token_lists(pa.array(tokens), self.pad_token_id)
        return torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @torch.no_grad()
    def probabilities(self, *inputs: torch.Tensor) -> np.ndarray:
        """The model's click probabilities for prepared inputs, back on the host."""
        return torch.sigmoid(self.model(*inputs)).float().cpu().numpy()

    def score(self, rows: Sequence[Row]) -> np.ndarray:
        if not rows:
            return np.zeros(0, dtype=np.float32)
        return self.probabilities(*self.inputs(rows))


class _Probability(nn.Module):
    def __init__(self, model: CTRModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(ids))


def export_ctr(scorer: Scorer, path: Path) -> Path:
    """Writes the CTR-only model ([B, F] int64 ids -> [B] probabilities, any B) as a torch.export
    program; torch.export.load(path).module() scores without cp_dist, TorchRec or Python code of ours."""
    if scorer.reads_text:
        raise UserError("only CTR-only runs (train-ctr, finetune --without-plm) export; a with-PLM model needs the PLM")
    example = torch.zeros(2, len(scorer.vocabularies.fields), dtype=torch.int64, device=scorer.device)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(_Probability(scorer.model), (example,), dynamic_shapes=({0: batch},))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    torch.export.save(program, staging)
    staging.replace(path)
    return path
