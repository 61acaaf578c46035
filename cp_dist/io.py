"""Atomic outputs: a run that fails leaves nothing half-written and loses nothing already written."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _sibling(target: Path, tag: str) -> Path:
    return target.parent / f".{target.name}.{tag}-{os.getpid()}"


@contextmanager
def atomic_dir(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling directory that replaces `target` only if the block succeeds."""
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: already exists; pass --overwrite to replace it")
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
