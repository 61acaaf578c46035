"""Local Ray clusters for job tests, inside a network namespace that has only loopback (Ray
listens on the host's own address too, even when asked for 127.0.0.1, and tests may only talk to
loopback), with Ray's token authentication on, as users have it; and the documented commands,
taken from the markdown they are documented in."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cp_dist.ray_cluster import private_token_env
from cp_dist.serving.loopback import run_on_loopback

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
DASHBOARD = "http://127.0.0.1:8265"
CLUSTER_README = REPO / "cluster" / "README.md"
REHEARSAL = "## 1. Rehearse on one machine"


def doc_block(path: Path, heading: str) -> list[str]:
    """The lines of the first ```bash block after the markdown heading that starts with `heading`."""
    text = path.read_text()
    start = text.find(f"\n{heading}")
    assert start >= 0, f"{path}: no heading {heading!r}"
    found = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert found, f"{path}: no bash block under {heading!r}"
    return found.group(1).splitlines()


def run_documented(lines: list[str], home: Path, log: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Runs documented shell lines as a user types them: in one bash from the repository, stopping at
    the first that fails, HOME a directory of the test's own (Ray's token lives in HOME/.ray), on
    loopback only; every process it leaves is ended with it. Output goes to `log`."""
    home.mkdir(parents=True, exist_ok=True)
    script = log.with_suffix(".sh")
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    env = {"HOME": str(home), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("w") as out:
        return run_on_loopback(["bash", str(script)], timeout=timeout, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


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
    auth = [f"export {key}={value}" for key, value in private_token_env().items()]
    lines = ["set -u", "ip link set lo up", f"export PATH={RAY.parent}:$PATH", *auth,  # `python` in a job: this environment's
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
