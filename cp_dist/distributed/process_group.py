"""Process groups on one machine: start N ranks that talk over loopback only, gloo or NCCL."""

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

from cp_dist.config import DistributedConfig
from cp_dist.errors import UserError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    device: torch.device  # dense layers, the language model and the batches
    backend: str
    table_device: torch.device  # where this rank's embedding-table shards live and are looked up

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Placement:
    """Backend and device types of a run, resolved once before any rank starts."""

    backend: str
    device_type: str
    table_device_type: str


def resolve_placement(distributed: DistributedConfig, cuda: bool | None = None) -> Placement:
    """Tables on the GPU need NCCL. Tables in host memory (distributed.table_device=cpu: fbgemm-gpu
    without its CUDA kernels, or tables larger than GPU memory) are exchanged by TorchRec over gloo,
    while the dense layers and the language model still run on the GPU when there is one.
    cuda: whether the ranks have GPUs (default: whether this process sees one)."""
    backend = distributed.backend
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if distributed.table_device == "cpu":
        if backend == "nccl":
            raise UserError("distributed.table_device=cpu exchanges tables over gloo; set distributed.backend to auto or gloo")
        return Placement("gloo", "cuda" if cuda else "cpu", "cpu")
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    device_type = "cuda" if backend == "nccl" else "cpu"
    return Placement(backend, device_type, device_type)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@contextmanager
def process_group(rank: int, world_size: int, placement: Placement, port: int) -> Iterator[RankInfo]:
    """Joins the group; on the way out, tears it down cleanly (gc first: torch 2.13 + gloo + DDP otherwise
    sometimes aborts at exit)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo's peer sockets on loopback

    def device(kind: str) -> torch.device:
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}") if kind == "cuda" else torch.device("cpu")

    if placement.device_type == "cuda":
        torch.cuda.set_device(device("cuda"))
    dist.init_process_group(placement.backend, init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size)
    failed = False
    try:
        yield RankInfo(rank, world_size, device(placement.device_type), placement.backend, device(placement.table_device_type))
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
    for name in ("torchrec", "fbgemm_gpu", "DeepSpeed"):  # kernel settings per table at INFO, on every rank
        logging.getLogger(name).setLevel(logging.WARNING)


def _entry(rank: int, world_size: int, placement: Placement, port: int, fn: Callable, args: tuple,
           environment: dict[str, str] | None = None) -> None:
    if environment is not None:  # the launching process's, not the fork server's (fixed when it started)
        os.environ.clear()
        os.environ.update(environment)
    quiet_library_noise()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    with process_group(rank, world_size, placement, port) as info:
        fn(info, *args)


#: What every rank imports: a CPU rank forked from a server that imported them once starts in a
#: fraction of a second, where a spawned one spends seconds importing torch, TorchRec and the stages.
#: Importing them must run no parallel torch work: an OpenMP pool in the server would not survive the fork.
RANK_MODULES = ("cp_dist.training.runner",)


def launch(fn: Callable[..., None], distributed: DistributedConfig, *args) -> None:
    """Runs fn(RankInfo, *args) on distributed.nproc ranks: in this process for 1; otherwise, on a
    machine without CUDA, ranks fork from this process's fork server (its imports fixed by the first
    launch: RANK_MODULES and that fn's module; each rank takes this process's environment as it is
    now), and they are spawned where there is CUDA: importing fbgemm-gpu asks the CUDA runtime for
    devices, and a process forked after that cannot use CUDA."""
    placement = resolve_placement(distributed)
    port = free_loopback_port()
    if distributed.nproc == 1:
        _entry(0, 1, placement, port, fn, args)
        return
    start_method = "spawn" if torch.cuda.is_available() else "forkserver"
    if start_method == "forkserver":
        mp.get_context(start_method).set_forkserver_preload([*RANK_MODULES, fn.__module__])
    mp.start_processes(_entry, args=(distributed.nproc, placement, port, fn, args, dict(os.environ)),
                       nprocs=distributed.nproc, start_method=start_method)
