"""Where resume points go. Every rank writes its own files into the directory `save` hands it;
each resume point carries the sha256 of its files, checked before a restart reads any of them.

LocalResumeStore keeps them in a run directory on a disk all ranks share (local runs, `cp-dist
train`); cp_dist.training.ray_train.RayResumeStore hands them to Ray Train's storage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import torch.distributed as dist

from cp_dist.errors import UserError
from cp_dist.io import atomic_file, digests, replace_dir, verify_digests
from cp_dist.runs import MANIFESTS, manifest_file


class ResumeStore(Protocol):
    def latest(self) -> AbstractContextManager[Path | None]: ...

    def save(self, write: Callable[[Path], None], metrics: dict) -> None: ...


def write_manifest(directory: Path, rank: int, files: dict[str, str]) -> None:
    (directory / manifest_file(rank)).write_text(json.dumps(files, indent=2) + "\n")


def verify_resume_point(directory: Path) -> None:
    """Every file each rank's manifest lists is there, unchanged (a UserError names the first that is not)."""
    for manifest in sorted(directory.glob(MANIFESTS)):
        verify_digests(directory, json.loads(manifest.read_text()), manifest)


class LocalResumeStore:
    """root/step-<N>/ on a disk all ranks share; root/LATEST names the newest complete one. A resume
    point is staged and renamed once every rank has written its files, so a crash mid-write leaves
    the previous one intact."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = root, keep

    @contextmanager
    def latest(self) -> Iterator[Path | None]:
        pointer = self.root / "LATEST"
        if not pointer.is_file():
            yield None
            return
        directory = self.root / pointer.read_text().strip()
        if not directory.is_dir():
            raise UserError(f"{pointer}: names {directory.name}, which is not there; remove {self.root} to start the run "
                            "over, or restore the resume point")
        verify_resume_point(directory)
        yield directory

    def save(self, write: Callable[[Path], None], metrics: dict) -> None:
        name = f"step-{metrics['global_step']:08d}"
        staging = self.root / f".{name}.staging"
        rank = dist.get_rank()
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        dist.barrier()
        write(staging)
        dist.barrier()
        if rank == 0:  # the staging directory holds every rank's files now
            write_manifest(staging, 0, digests(staging))
            replace_dir(staging, self.root / name)
            with atomic_file(self.root / "LATEST") as tmp:
                tmp.write_text(name + "\n")
            for old in sorted(self.root.glob("step-*"))[: -self.keep]:
                shutil.rmtree(old)
        dist.barrier()

    def clear(self) -> None:
        """Removes every resume point (the run has finished; its result is in the run directory)."""
        shutil.rmtree(self.root, ignore_errors=True)
