"""The endpoint's settings (`cp-dist serve` flags), apart from the endpoint so the CLI reads them
without importing torch or Ray."""

from __future__ import annotations

from dataclasses import dataclass

from cp_dist.errors import UserError


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"  # the endpoint's address (Ray's own ports listen on the host's address too)
    port: int = 8000
    replicas: int = 1
    replica_cpus: float = 1.0  # Ray's CPU reservation per replica
    threads: int = 1  # torch threads per replica
    # requests per forward pass: at most max_batch_size * max_candidates rows (mind memory with the PLM)
    max_batch_size: int = 8
    # requests a replica holds at once; past it the proxy backs off and retries, which at 64 clients cut
    # throughput to a third here (perf/bench_endpoint.py); Serve's default, 5, would also cap batches at 5
    max_ongoing_requests: int = 256
    batch_wait_ms: float = 2.0  # how long a forward pass waits for more requests
    max_candidates: int = 4096  # items (or raw candidates) per request; more get 413
    device: str = "cpu"  # "cuda": each replica holds a GPU, the model and the item catalogue on it
    compile: bool = False  # torch.compile the CTR model (the warm-up request compiles it)
    with_plm: bool = False  # allow a with-PLM run (its language model runs on every request)

    def __post_init__(self) -> None:
        for name in ("port", "replicas", "threads", "max_batch_size", "max_ongoing_requests", "max_candidates"):
            if getattr(self, name) < 1:
                raise UserError(f"serve setting {name}={getattr(self, name)}; expected a positive integer")
        if self.batch_wait_ms < 0 or self.replica_cpus < 0:
            raise UserError("serve settings batch_wait_ms and replica_cpus: expected >= 0")
        if self.port > 65535:
            raise UserError(f"serve setting port={self.port}; expected at most 65535")
        if self.max_ongoing_requests < self.max_batch_size:
            raise UserError(f"serve settings: max_ongoing_requests {self.max_ongoing_requests} < max_batch_size "
                            f"{self.max_batch_size}; a replica could never fill a batch")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"serve setting device={self.device!r}; expected 'cpu' or 'cuda'")

    @property
    def max_body_bytes(self) -> int:
        """Request bodies past this get 413 unread: 1 KiB per candidate, and 64 KiB."""
        return 1024 * self.max_candidates + 65536
