"""Process groups on one machine: spawn N ranks that talk over loopback only, gloo or NCCL."""

from __future__ import annotations

import gc
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"distributed.backend {backend!r}: expected auto, gloo or nccl")
    return backend


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@contextmanager
def process_group(rank: int, world_size: int, backend: str, port: int) -> Iterator[RankInfo]:
    """Joins the group; on the way out, tears it down cleanly (gc first: stack.md, torch 2.13 + gloo)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo's peer sockets on loopback
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size)
    failed = False
    try:
        yield RankInfo(rank, world_size, device, backend)
    except BaseException:
        failed = True
        raise
    finally:
        gc.collect()
        if not failed:  # a barrier after a failure would wait for a rank that may be gone
            dist.barrier()
        dist.destroy_process_group()


#: Deprecation notices from TorchRec and DDP internals that users cannot act on.
LIBRARY_NOISE = (
    "broadcast_buffers", "HeuristicalStorageReservation", "DTensor instead", "_apply_optimizer_in_backward",
    "non-tuple sequence for multidimensional indexing",  # torchmetrics 1.0.3 gathering across ranks
)


def quiet_library_noise() -> None:
    for message in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    for name in ("torchrec.distributed.planner.types", "torchrec.distributed.planner.storage_reservations",
                 "torchrec.distributed.utils", "torch.fx._symbolic_trace"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _entry(rank: int, world_size: int, backend: str, port: int, fn: Callable, args: tuple) -> None:
    quiet_library_noise()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    with process_group(rank, world_size, backend, port) as info:
        fn(info, *args)


def launch(fn: Callable[..., None], nproc: int, backend: str, *args) -> None:
    """Runs fn(RankInfo, *args) on nproc ranks: in this process for 1, spawned processes otherwise."""
    backend = resolve_backend(backend)
    port = free_loopback_port()
    if nproc == 1:
        _entry(0, 1, backend, port, fn, args)
    else:
        mp.start_processes(_entry, args=(nproc, backend, port, fn, args), nprocs=nproc, start_method="spawn")
