"""The command line starts light: `--help` and the data commands import no deep-learning stack."""

from __future__ import annotations

import ast
import graphlib
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


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """The cp_dist modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cp_dist"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cp_dist")}
    return found & modules


#: cp_dist's top-level modules and packages in data-flow order: a module imports only from its own
#: or an earlier entry ("__init__": the package itself, for its version).
LAYERS = ["__init__", "errors", "io", "registry", "progress", "config", "pretrained", "plots", "ray_cluster", "data", "ctr",
          "plm", "clickprompt", "baselines", "models", "runs", "distributed", "training", "experiments", "serving", "cli"]


def test_imports_follow_the_data_flow_without_a_circle() -> None:
    """Each module's dependencies point one way, lazy imports included: down the data-flow order (so the
    run machinery never imports the experiments built on it), and without a circle inside a layer (the
    engines' implementations import their interface, never each other)."""
    root = Path(__file__).parents[1]
    files = {".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): f
             for f in (root / "cp_dist").rglob("*.py")}
    graph = {name: _imports_of(path, set(files)) - {name} for name, path in files.items()}
    assert "cp_dist.distributed.engines.base" in graph["cp_dist.distributed.engines.hybrid"], "the graph was read"
    layer = {name: LAYERS.index(name.split(".")[1] if "." in name else "__init__") for name in graph}
    upward = [f"{name} -> {dependency}" for name in graph for dependency in graph[name] if layer[dependency] > layer[name]]
    assert not upward, f"imports against the data-flow order: {upward}"
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")
