"""meta.json: what a prepared data directory holds, read back by loaders, trainers and scorers."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cp_dist.errors import UserError
from cp_dist.io import atomic_file

META_FILE = "meta.json"
VOCAB_FILE = "vocab.parquet"
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FieldMeta:
    name: str
    title: str
    side: str
    vocab_size: int  # including index 0, the out-of-vocabulary slot
    offset: int  # first global id of this field when all fields share one id space

    @property
    def text_column(self) -> str:
        return f"{self.name}_text"

    @property
    def text_id_column(self) -> str:
        """Row of this field's readable value in the token table (data.tokens)."""
        return f"{self.name}_text_id"


@dataclass(frozen=True)
class DatasetMeta:
    dataset: str
    fields: tuple[FieldMeta, ...]
    splits: dict[str, dict]  # split -> rows, positives, positive_rate, time range
    label_rule: str
    split: dict  # method, ratios, seed
    min_count: int
    has_timestamp: bool
    sources: list[dict]  # role, file, bytes, sha256
    counts: dict[str, int]
    malformed: list[dict]
    created_by: str
    tokenizer: dict | None = None  # name, max_length, column; set by `cp-dist data tokenize`
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return sum(f.vocab_size for f in self.fields)

    def split_path(self, data_dir: Path, split: str) -> Path:
        return data_dir / f"{split}.parquet"

    def split_files(self, data_dir: Path, split: str) -> list[Path]:
        """A split's Parquet files in row order: `<split>.parquet` itself, or the numbered part files
        inside it where `prepare --engine ray` wrote the split as many files."""
        path = self.split_path(data_dir, split)
        return sorted(path.glob("*.parquet")) if path.is_dir() else [path]

    def read_split(self, data_dir: Path, split: str, columns: list[str] | None = None) -> pa.Table:
        return pa.concat_tables(pq.read_table(path, columns=columns) for path in self.split_files(data_dir, split))

    def save(self, data_dir: Path) -> None:
        payload = dataclasses.asdict(self) | {"num_features": self.num_features}
        with atomic_file(data_dir / META_FILE) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, data_dir: Path) -> DatasetMeta:
        path = data_dir / META_FILE
        if not path.is_file():
            raise UserError(f"{path}: not found; expected a directory written by `cp-dist data prepare`")
        try:
            payload = json.loads(path.read_text())
            payload.pop("num_features", None)
            if payload.get("format_version") != FORMAT_VERSION:
                raise UserError(f"{path}: format_version {payload.get('format_version')}, expected {FORMAT_VERSION}")
            payload["fields"] = tuple(FieldMeta(**f) for f in payload["fields"])
            return cls(**payload)
        except (ValueError, TypeError, KeyError) as err:
            raise UserError(f"{path}: not a cp_dist meta file ({err})") from err
