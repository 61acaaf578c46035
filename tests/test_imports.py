"""The command line starts light: `--help` and the data commands import no deep-learning stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchrec", "transformers", "deepspeed", "ray", "scipy")


@pytest.mark.parametrize("words", [["data", "--help"], ["--help"], ["train", "--help"], ["compare", "--help"],
                                   ["reproduce", "--help"], ["serve", "--help"]])
def test_help_imports_no_heavy_package(words: list[str]) -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("cp-dist")), *words], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {m.group(1) for m in re.finditer(r"^import time:.*\|\s+([\w.]+)$", done.stderr, re.M)}
    assert "cp_dist.cli" in imported, "the import profile was read"
    assert not {m.split(".")[0] for m in imported} & set(HEAVY)
