"""Running a command where only loopback exists: a fresh network namespace (`unshare --net`, as
root) with `lo` up. Ray listens on the host's own address as well as 127.0.0.1, whatever it is
asked; inside such a namespace every listener, Ray's and the endpoint's, can only be reached from
this machine. The endpoint's tests and load test run there.

The command also gets its own PID namespace, whose first process it is: when it ends, or is killed
on a timeout, the kernel ends every process it left (a server, Ray's daemons), so nothing outlives it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence

from cp_dist.errors import UserError


def run_on_loopback(command: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise UserError("unshare (util-linux) and ip (iproute2) are needed to run on loopback only")
    script = f"ip link set lo up && exec {shlex.join(command)}"
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c", script],
                          timeout=timeout, check=False, **kwargs)
