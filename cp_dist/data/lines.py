"""Raw files as numbered lines: plain or gzip, checksummed while read, malformed lines accounted.

Every format reader goes through RawFile, so line numbers, checksums, progress bars and the
skip-or-fail policy for malformed lines are the same for all data sets.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
from tqdm.auto import tqdm

from cp_dist.errors import UserError

BLOCK_BYTES = 32 << 20
FIRST_LINES_KEPT = 10


@dataclass
class MalformedLines:
    """Malformed lines of one file: how many, and the first few line numbers with their reason."""

    file: str
    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "count": self.count,
            "first_lines": [{"line": n, "reason": r} for n, r in self.first],
        }


class _HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them and advancing a progress bar."""

    def __init__(self, raw: io.BufferedReader, progress: tqdm):
        self._raw = raw
        self._progress = progress
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self._progress.update(n)
        return n


class RawFile:
    """One raw input file, read in blocks of whole lines.

    strict=True turns the first malformed line into a UserError; otherwise malformed lines are
    skipped and counted in `malformed`.
    """

    def __init__(self, path: Path, *, encoding: str = "utf-8", strict: bool = False):
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        self.path = path
        self.encoding = encoding
        self.strict = strict
        self.malformed = MalformedLines(str(path))
        self.sha256: str | None = None
        self.bytes = path.stat().st_size

    def bad_line(self, line_no: int, reason: str) -> None:
        if self.strict:
            raise UserError(f"{self.path}:{line_no}: malformed line ({reason}); rerun without --strict to skip it")
        self.malformed.count += 1
        if len(self.malformed.first) < FIRST_LINES_KEPT:
            self.malformed.first.append((line_no, reason))

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, list[bytes]]]:
        """Yields (number of the block's first line, lines without their end-of-line bytes)."""
        with open(self.path, "rb") as raw, tqdm(
            total=self.bytes, unit="B", unit_scale=True, desc=self.path.name, leave=False, disable=None
        ) as progress:
            hashing = _HashingReader(raw, progress)
            stream: io.IOBase = io.BufferedReader(hashing, block_bytes)
            if self.path.suffix == ".gz":
                stream = gzip.GzipFile(fileobj=stream)
            next_line, tail = 1, b""
            try:
                while block := stream.read(block_bytes):
                    block = tail + block
                    cut = block.rfind(b"\n") + 1
                    block, tail = block[:cut], block[cut:]
                    if block:
                        lines = block.split(b"\n")[:-1]
                        yield next_line, [line.rstrip(b"\r") for line in lines]
                        next_line += len(lines)
            except (OSError, EOFError) as err:  # truncated or corrupt gzip stream
                raise UserError(f"{self.path}: cannot read past line {next_line} ({err})") from err
            if tail:
                yield next_line, [tail.rstrip(b"\r")]
            self.sha256 = hashing.sha256.hexdigest()

    def decoded_lines(self, *, skip_header: bool = False) -> Iterator[tuple[int, str]]:
        """Numbered text lines; a line that does not decode is reported as malformed."""
        for first, lines in self.blocks():
            for offset, line in enumerate(lines):
                line_no = first + offset
                if skip_header and line_no == 1:
                    continue
                try:
                    yield line_no, line.decode(self.encoding)
                except UnicodeDecodeError as err:
                    self.bad_line(line_no, f"not {self.encoding}: {err.reason} at byte {err.start}")

    def header(self) -> str:
        """The first line, decoded (empty string for an empty file)."""
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rb") as handle:
            return handle.readline().decode(self.encoding, errors="replace").rstrip("\r\n")

    def json_tables(self, schema: pa.Schema) -> Iterator[tuple[pa.Table, list[int]]]:
        """JSON-lines blocks as Arrow tables of `schema` (other keys ignored), with their line numbers.

        The fast path hands a whole block to pyarrow's JSON reader. A block it rejects is parsed
        line by line, so each bad line is reported by number and the good ones are kept.
        """
        for first, lines in self.blocks():
            numbered = [(first + k, line) for k, line in enumerate(lines) if line.strip()]
            if not numbered:
                continue
            table = _read_json_block(b"\n".join(line for _, line in numbered), schema)
            if table is not None and table.num_rows == len(numbered):
                yield table, [n for n, _ in numbered]
                continue
            records, numbers = [], []
            for line_no, line in numbered:
                reason = None
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        reason = "not a JSON object"
                except ValueError as err:
                    reason = f"invalid JSON: {err}"
                if reason is None:
                    reason = _schema_mismatch(record, schema)
                if reason is None:
                    records.append({name: record.get(name) for name in schema.names})
                    numbers.append(line_no)
                else:
                    self.bad_line(line_no, reason)
            if records:
                yield pa.Table.from_pylist(records, schema=schema), numbers


def _read_json_block(block: bytes, schema: pa.Schema) -> pa.Table | None:
    try:
        return pajson.read_json(
            io.BytesIO(block),
            read_options=pajson.ReadOptions(block_size=max(len(block), 1 << 20), use_threads=True),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _schema_mismatch(record: dict, schema: pa.Schema) -> str | None:
    """Why a parsed JSON record does not fit the Arrow schema, or None if it does."""
    for f in schema:
        value = record.get(f.name)
        if value is None:
            continue
        try:
            pa.array([value], type=f.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            return f"field {f.name!r} is {value!r}, expected {f.type}"
    return None



class RawBlock(RawFile):
    """Lines of a raw file that were already read, numbered as in the whole file: what a parse task of
    the Ray engine hands a format reader. Malformed lines are counted here and merged by the caller."""

    def __init__(self, path: Path, first_line: int, lines: bytes, *, encoding: str, strict: bool):
        self.path, self.encoding, self.strict = path, encoding, strict
        self.malformed = MalformedLines(str(path))
        self.sha256, self.bytes = None, len(lines)
        self._first_line, self._lines = first_line, lines

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, list[bytes]]]:
        yield self._first_line, self._lines.split(b"\n")
