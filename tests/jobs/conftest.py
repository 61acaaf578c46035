"""A local Ray cluster for job tests, inside a network namespace that has only loopback
(Ray listens on the host's own address too, even when asked for 127.0.0.1, and tests may only
talk to loopback)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
DASHBOARD = "http://127.0.0.1:8265"


def run_ray_jobs(jobs: list[list[str]], logs: Path, timeout: int = 1200) -> list[int]:
    """Starts a 2-CPU Ray head on loopback in a fresh network namespace, `ray job submit`s each
    job (a command line run from the repository as the job's working directory) in turn, stops
    the cluster; returns the jobs' exit codes. Job i's output goes to logs/job<i>.txt."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to keep the test's Ray cluster on loopback")
    logs.mkdir(parents=True, exist_ok=True)
    lines = ["set -u", "ip link set lo up", f"export PATH={RAY.parent}:$PATH",  # `python` in a job: this environment's
             # a token in ~/.ray (left by any earlier local Ray, e.g. the endpoint's) turns token
             # auth on for `ray start` but not for `ray job submit`; this cluster is loopback-only
             "export RAY_AUTH_MODE=disabled",
             f"{RAY} start --head --port=6390 --num-cpus=2 --dashboard-host=127.0.0.1 --disable-usage-stats "
             f"> {logs}/ray-start.txt 2>&1 || exit 90"]
    for i, job in enumerate(jobs):
        submit = [str(RAY), "job", "submit", "--address", DASHBOARD, "--working-dir", str(REPO), "--", *job]
        lines.append(f"{shlex.join(submit)} > {logs}/job{i}.txt 2>&1; echo $? > {logs}/job{i}.rc")
    lines.append(f"{RAY} stop --force > {logs}/ray-stop.txt 2>&1")
    script = logs / "cluster.sh"
    script.write_text("\n".join(lines) + "\n")
    started = subprocess.run(["unshare", "--net", "bash", str(script)], timeout=timeout, capture_output=True, text=True)
    if started.returncode == 90 or not (logs / "job0.rc").is_file():
        pytest.fail(f"the Ray cluster did not start:\n{(logs / 'ray-start.txt').read_text()[-3000:]}\n{started.stderr[-2000:]}")
    return [int((logs / f"job{i}.rc").read_text()) for i in range(len(jobs))]
