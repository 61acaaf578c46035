"""The interface every raw-format reader implements, and helpers shared by the readers."""

from __future__ import annotations

import csv
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cp_dist.data.lines import RawFile
from cp_dist.data.schema import INTERACTION_SCHEMA, Field, LabelRule, RawTables
from cp_dist.errors import UserError

CHUNK_ROWS = 1_000_000


class RawFormat(ABC):
    """A data set's raw format: which files, which fields, which label rule, and how to read them."""

    name: str
    fields: tuple[Field, ...]
    label_rule: LabelRule
    has_timestamp: bool = True
    #: how valid and test sizes round (cp_dist.data.prepare.split_cuts): "nearest", or "up" where
    #: that is what the paper's Table 1 counts show
    held_out_rounding: str = "nearest"
    encoding: str = "utf-8"
    #: role -> accepted file names, first match wins (e.g. plain or gzip variants).
    file_names: dict[str, tuple[str, ...]]
    #: the role of the interactions file, the one file that grows with the log
    interactions_role: str

    def locate(self, raw_dir: Path, *, strict: bool) -> dict[str, RawFile]:
        if not raw_dir.is_dir():
            raise UserError(f"{raw_dir}: raw data directory not found")
        files = {}
        for role, names in self.file_names.items():
            found = [raw_dir / n for n in names if (raw_dir / n).is_file()]
            if not found:
                raise UserError(
                    f"{raw_dir / names[0]}: file not found; the {self.name} {role} file is expected "
                    f"as {' or '.join(names)}"
                )
            files[role] = RawFile(found[0], encoding=self.encoding, strict=strict)
        return files

    @abstractmethod
    def read_side_tables(self, files: dict[str, RawFile]) -> tuple[pa.Table | None, pa.Table]:
        """(users or None, items), and every file's header checked."""

    @abstractmethod
    def read_interactions(self, raw: RawFile) -> Iterator[pa.Table]:
        """Interaction chunks (INTERACTION_SCHEMA) of whatever lines `raw` yields: the whole file, or
        one block of it when the Ray engine parses blocks in parallel."""

    def read(self, files: dict[str, RawFile]) -> RawTables:
        """Side tables now, interactions lazily."""
        users, items = self.read_side_tables(files)
        raw = files[self.interactions_role]
        return RawTables(users, items, self.read_interactions(raw), str(raw.path))


def check_header(raw: RawFile, expected: Sequence[str], split: Callable[[str], list[str]]) -> None:
    got = split(raw.header())
    if list(got) != list(expected):
        raise UserError(f"{raw.path}:1: header is {got}, expected {list(expected)}")


def split_on(separator: str) -> Callable[[str], list[str]]:
    return lambda line: line.split(separator)


def split_csv(delimiter: str) -> Callable[[str], list[str]]:
    """One line of quoted CSV; an unbalanced quote raises csv.Error instead of eating the next line."""

    def split(line: str) -> list[str]:
        return next(csv.reader([line], delimiter=delimiter, quotechar='"', escapechar="\\", strict=True))

    return split


def delimited_rows(
    raw: RawFile, split: Callable[[str], list[str]], n_fields: int, *, skip_header: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """Numbered rows with exactly n_fields values; other lines are reported as malformed."""
    for line_no, text in raw.decoded_lines(skip_header=skip_header):
        if not text.strip():
            continue
        try:
            parts = split(text)
        except csv.Error as err:
            raw.bad_line(line_no, f"unreadable CSV: {err}")
            continue
        if len(parts) != n_fields:
            raw.bad_line(line_no, f"{len(parts)} fields, expected {n_fields}")
            continue
        yield line_no, parts


class SideTableBuilder:
    """Collects a user or item table row by row: "key" plus one string column per field."""

    def __init__(self, *columns: str):
        self._keys: list[str] = []
        self._columns: dict[str, list[str | None]] = {c: [] for c in columns}

    def add(self, key: str, *values: str | None) -> None:
        self._keys.append(key)
        for column, value in zip(self._columns.values(), values, strict=True):
            column.append(value)

    def table(self) -> pa.Table:
        columns = {name: pa.array(values, pa.string()) for name, values in self._columns.items()}
        return pa.table({"key": pa.array(self._keys, pa.string()), **columns})


class InteractionBuffer:
    """Collects parsed interaction rows and emits them as Arrow chunks of CHUNK_ROWS."""

    def __init__(self, raw: RawFile):
        self._raw = raw
        self._columns: tuple[list, ...] = ([], [], [], [], [])

    def add(self, line_no: int, user: str, item: str, rating: str, timestamp: str | None) -> None:
        try:
            value = float(rating)
            when = int(float(timestamp)) if timestamp is not None else None
        except ValueError:
            self._raw.bad_line(line_no, f"rating {rating!r} or timestamp {timestamp!r} is not a number")
            return
        for column, v in zip(self._columns, (user, item, value, when, line_no)):
            column.append(v)

    def full(self) -> bool:
        return len(self._columns[0]) >= CHUNK_ROWS

    def flush(self) -> pa.Table:
        table = pa.Table.from_arrays([pa.array(c) for c in self._columns], schema=INTERACTION_SCHEMA)
        self._columns = ([], [], [], [], [])
        return table

    def drain(self, rows: Iterator[tuple[int, str, str, str, str | None]]) -> Iterator[pa.Table]:
        for row in rows:
            self.add(*row)
            if self.full():
                yield self.flush()
        if self._columns[0]:
            yield self.flush()


def require(raw: RawFile, table: pa.Table, numbers: list[int], needed: Sequence[str]) -> pa.Table:
    """Rows of a parsed JSON block that have every needed value; the others are malformed lines."""
    valid = functools.reduce(pc.and_, (pc.is_valid(table[c]) for c in needed))
    if pc.all(valid).as_py():
        return table
    for number, row in zip(numbers, table.select(list(needed)).to_pylist()):
        missing = [c for c in needed if row[c] is None]
        if missing:
            raw.bad_line(number, f"missing or unreadable {', '.join(missing)}")
    return table.filter(valid)


def json_side_table(raw: RawFile, schema: pa.Schema, key: str) -> pa.Table:
    """A whole JSON-lines metadata file as one table; lines without the key are malformed."""
    parts = [require(raw, t, n, [key]) for t, n in raw.json_tables(schema)]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def json_interactions(
    raw: RawFile,
    schema: pa.Schema,
    *,
    user: str,
    item: str,
    rating: str,
    timestamp: str,
    parse_time: Callable[[pa.Array], pa.Array] | None = None,
) -> Iterator[pa.Table]:
    """Interaction chunks from a JSON-lines file; a line missing a needed value is malformed."""
    for table, numbers in raw.json_tables(schema):
        if parse_time is not None:
            table = table.set_column(
                table.schema.get_field_index(timestamp), timestamp, parse_time(table[timestamp].combine_chunks())
            )
        table = table.append_column("line", pa.array(numbers, pa.int64()))
        table = require(raw, table, numbers, [user, item, rating, timestamp])
        yield pa.Table.from_arrays(
            [table[user], table[item], table[rating].cast(pa.float64()), table[timestamp], table["line"]],
            schema=INTERACTION_SCHEMA,
        )

