"""The `ray job submit` lines of the docs, taken from where they are documented: each names a job
script whose own parser takes its options, and the cluster README's rehearsal and the README's
"Distributed training" lines run as typed where an earlier Ray left a token (tests/jobs/
test_ray_jobs.py runs the rehearsal's jobs in full, on a fresh HOME)."""

from __future__ import annotations

import argparse
import re
import runpy
import secrets
import shlex
import sys
from pathlib import Path

import pytest

from tests.jobs.conftest import CLUSTER_README, REHEARSAL, REPO, doc_block, run_documented

SUBMIT = re.compile(r"ray job submit\b.*?\s--\s+python\s+(jobs/[\w.-]+\.py)([^`\n]*)")
DOCUMENTED = [REPO / "README.md", CLUSTER_README, *sorted((REPO / "cluster").rglob("*.yaml")), *sorted((REPO / "jobs").glob("*.py")),
              *sorted((REPO / "docs").rglob("*.md"))]
JOB_SCRIPTS = sorted(p for p in (REPO / "jobs").glob("*.py") if "__main__" in p.read_text())


def _logical_lines(text: str) -> list[str]:
    """Lines with their `\\` continuations joined and a leading comment marker dropped (YAML
    comments and Python docstrings document commands too)."""
    lines, pending = [], ""
    for raw in text.splitlines():
        line = re.sub(r"^\s*#\s?", "", raw) if pending or raw.lstrip().startswith("#") else raw
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def _parses(script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Runs the job script's own command line on `argv` and stops right after its parser: the exit
    code argparse gives (2 for an unknown option or a bad value), 0 when they parse."""
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args=None, namespace=None):
        parse(self, args, namespace)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.syspath_prepend(str(REPO / "jobs"))
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(REPO / script), run_name="__main__")
    return stopped.value.code or 0


def _documented_submits(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> list[tuple[str, str, list[str]]]:
    texts = {str(path.relative_to(REPO)): path.read_text() for path in DOCUMENTED}
    for script in JOB_SCRIPTS:  # and each job's --help
        name = str(script.relative_to(REPO))
        _parses(name, ["--help"], monkeypatch)
        texts[f"{name} --help"] = capsys.readouterr().out
    found = []
    for where, text in texts.items():
        for line in _logical_lines(text):
            for script, rest in SUBMIT.findall(line):
                found.append((where, script, shlex.split(rest, comments=True)))
    return found


def test_every_documented_submit_names_a_job_script_whose_parser_takes_its_options(monkeypatch: pytest.MonkeyPatch,
                                                                                   capsys: pytest.CaptureFixture) -> None:
    submits = _documented_submits(monkeypatch, capsys)
    where = {w for w, _, _ in submits}
    assert {"README.md", "cluster/README.md", "cluster/ray-cluster.yaml", "jobs/pamlm_goodreads.py --help"} <= where, where
    for doc, script, argv in submits:
        assert (REPO / script).is_file(), f"{doc}: {script} does not exist"
        assert _parses(script, argv, monkeypatch) == 0, f"{doc}: python {script} {shlex.join(argv)}: {capsys.readouterr().err}"


@pytest.mark.slow
def test_documented_lines_run_as_typed_where_an_earlier_ray_left_a_token(tmp_path: Path, ml100k_raw: Path) -> None:
    """The state of the issue that made this test: any local ray.init() (`cp-dist serve`, `prepare
    --engine ray`) writes ~/.ray/auth_token, and a token turns authentication on for `ray start`
    but not for a `ray job submit` whose shell lacks RAY_AUTH_MODE=token. The cluster README's
    block with the README's "Distributed training" lines before its `ray stop`, each job asked for
    its --help (its run is test_ray_jobs.py's); meanwhile a driver that joins without the mode."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(16))
    *rehearsal, stop = doc_block(CLUSTER_README, REHEARSAL)
    assert stop.strip() == "ray stop", stop
    readme = doc_block(REPO / "README.md", "## Distributed training at scale")
    asked = [re.sub(r"\s+#.*$", "", line) + " --help" if "ray job submit" in line else line for line in rehearsal + readme]
    started = next(i for i, line in enumerate(asked) if line.startswith("ray start")) + 1
    asked.insert(started, "env -u RAY_AUTH_MODE python -m cp_dist.cli data prepare --engine ray --ray-address 127.0.0.1:6379 "
                 f"--dataset ml-100k --raw {ml100k_raw} --out {tmp_path / 'out'} > {tmp_path / 'refused.txt'} 2>&1 &")
    ran = run_documented([*asked, "wait", stop], home, tmp_path / "lines.txt", timeout=600)
    log = (tmp_path / "lines.txt").read_text()
    assert ran.returncode == 0, log[-5000:]
    helps = sum("ray job submit" in line for line in asked)
    assert helps >= 4 and len(re.findall(r"Job '\S+' succeeded", log)) == helps, log[-5000:]
    assert log.count("usage: pamlm_goodreads.py") >= 3 and "usage: finetune_goodreads.py" in log, log[-5000:]
    refused = (tmp_path / "refused.txt").read_text()
    assert "cp-dist: error: could not join the Ray cluster at 127.0.0.1:6379" in refused, refused[-3000:]
    assert "export RAY_AUTH_MODE=token" in refused and "Traceback" not in refused, refused[-3000:]
    assert not (tmp_path / "out").exists()
