"""Atomic outputs: a run that fails leaves nothing half-written and loses nothing already written."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cp_dist.errors import UserError


def _sibling(target: Path, tag: str) -> Path:
    return target.parent / f".{target.name}.{tag}-{os.getpid()}"


@contextmanager
def atomic_dir(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling directory that replaces `target` only if the block succeeds."""
    if target.exists() and not overwrite:
        raise UserError(f"{target}: already exists; pass --overwrite to replace it")
    tmp = _sibling(target, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)


def replace_dir(source: Path, target: Path) -> None:
    """Moves the finished directory `source` to `target`, replacing any previous `target`."""
    if target.exists():
        old = _sibling(target, "old")
        target.rename(old)
        source.rename(target)
        shutil.rmtree(old)
    else:
        source.rename(target)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yields a temporary sibling path that replaces `target` (atomically) only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def write_json(path: Path, payload: dict) -> None:
    """A result file, written atomically and diff-friendly (indented, trailing newline)."""
    import json

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def file_digest(path: Path) -> str:
    """sha256 of a file, read in blocks (checkpoint files can be larger than memory)."""
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digests(directory: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under directory."""
    return {p.relative_to(directory).as_posix(): file_digest(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def verify_digests(directory: Path, expected: dict[str, str], index: Path) -> None:
    """Every file `index` lists is there with its recorded sha256; else a UserError that names the
    first file that is missing or differs, before anything is read from it."""
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise UserError(f"{path}: missing; {index.name} lists it, so the checkpoint is incomplete and was not loaded")
        found = file_digest(path)
        if found != digest:
            raise UserError(f"{path}: sha256 {found[:16]}…, expected {digest[:16]}… ({index.name}); the file is "
                            "damaged or was changed, so the checkpoint was not loaded")
