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


def run_ray_jobs(waves: list[dict[str, list[str]]], logs: Path, cpus: int = 2, timeout: int = 1200) -> dict[str, int]:
    """Starts a Ray head of `cpus` logical CPUs on loopback in a fresh network namespace, `ray job
    submit`s the jobs (each a name and a command line run from the repository as the job's working
    directory) wave by wave, the jobs of a wave at once, stops the cluster; returns each job's exit
    code. A job's output goes to logs/<name>.txt. More logical CPUs than cores let several 2-worker
    jobs run together, as jobs share a real cluster (on 2 cores the gain is small: four such jobs
    took 296 s at once against 351 s in turn, their start-up being CPU-bound), but Ray Data sizes
    its parallelism by them, so data jobs want the real count."""
    names = [name for wave in waves for name in wave]
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to keep the test's Ray cluster on loopback")
    logs.mkdir(parents=True, exist_ok=True)
    lines = ["set -u", "ip link set lo up", f"export PATH={RAY.parent}:$PATH",  # `python` in a job: this environment's
             # a token in ~/.ray (left by any earlier local Ray, e.g. the endpoint's) turns token
             # auth on for `ray start` but not for `ray job submit`; this cluster is loopback-only
             "export RAY_AUTH_MODE=disabled",
             f"{RAY} start --head --port=6390 --num-cpus={cpus} --dashboard-host=127.0.0.1 --disable-usage-stats "
             f"> {logs}/ray-start-{names[0]}.txt 2>&1 || exit 90"]
    for wave in waves:
        for name, job in wave.items():
            submit = [str(RAY), "job", "submit", "--address", DASHBOARD, "--working-dir", str(REPO), "--", *job]
            lines.append(f"({shlex.join(submit)} > {logs}/{name}.txt 2>&1; echo $? > {logs}/{name}.rc) &")
        lines.append("wait")
    lines.append(f"{RAY} stop --force > {logs}/ray-stop-{names[0]}.txt 2>&1")
    script = logs / f"cluster-{names[0]}.sh"
    script.write_text("\n".join(lines) + "\n")
    started = subprocess.run(["unshare", "--net", "bash", str(script)], timeout=timeout, capture_output=True, text=True)
    if started.returncode == 90 or not (logs / f"{names[0]}.rc").is_file():
        pytest.fail(f"the Ray cluster did not start:\n{(logs / f'ray-start-{names[0]}.txt').read_text()[-3000:]}\n{started.stderr[-2000:]}")
    return {name: int((logs / f"{name}.rc").read_text()) for name in names}
