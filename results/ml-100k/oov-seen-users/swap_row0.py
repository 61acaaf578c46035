"""Issue 36 (a), the row-0 swap: swap row 0 (the OOV row) of every table between two finished runs with the same tables,
then score both swapped models on test, split by whether the row's user was seen in training.

    python results/ml-100k/oov-seen-users/swap_row0.py DATA RUN_A RUN_B OUT
    (RUN_*: finished run directories with the same tables; OUT: where the swapped copies and swap.json go)

The copies' checkpoint digests are rewritten, so `cp-dist evaluate` accepts them: an experiment on
purpose, never a way to repair a checkpoint.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score

from cp_dist.experiments.significance import auc_by_user_seen, long_tail_masks
from cp_dist.io import file_digest
from cp_dist.training.evaluate import predict, split_labels
from cp_dist.training.finished import load_run

data, run_a, run_b, out = map(Path, sys.argv[1:5])


def tables(run: Path) -> dict:
    return load_file(str(run / "checkpoint" / "tables-rank00000.safetensors"))


def write(run: Path, blocks: dict, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target)
    path = target / "checkpoint" / "tables-rank00000.safetensors"
    save_file(blocks, str(path))
    index = json.loads((target / "checkpoint" / "checkpoint.json").read_text())
    index["files"][path.name] = file_digest(path)
    (target / "checkpoint" / "checkpoint.json").write_text(json.dumps(index, indent=2) + "\n")


a, b = tables(run_a), tables(run_b)
assert set(a) == set(b), "the two runs' tables differ"
swapped_a, swapped_b = dict(a), dict(b)
for key in a:
    table, _, offsets = key.rpartition("@")
    if offsets.split(",")[0] != "0":
        continue  # a block that does not hold row 0
    swapped_a[key], swapped_b[key] = a[key].clone(), b[key].clone()
    swapped_a[key][0], swapped_b[key][0] = b[key][0], a[key][0]
    print(f"{table}: row-0 norm {a[key][0].norm():.3f} ({run_a.name}) / {b[key][0].norm():.3f} ({run_b.name})")
write(run_a, swapped_a, out / f"{run_a.name}-with-row0-of-{run_b.name}")
write(run_b, swapped_b, out / f"{run_b.name}-with-row0-of-{run_a.name}")

labels = split_labels(data, "test")
masks, _ = long_tail_masks(data)
result = {}
for run in (run_a, run_b, out / f"{run_a.name}-with-row0-of-{run_b.name}", out / f"{run_b.name}-with-row0-of-{run_a.name}"):
    loaded = load_run(run, data)
    p = predict(loaded.logits, loaded.batches("test"))
    cells = auc_by_user_seen(labels, p, masks)
    result[run.name] = {"all": float(roc_auc_score(labels, p)), **{("seen" if c["user_seen"] else "unseen"): c for c in cells}}
    print(run.name, json.dumps(result[run.name]))
(out / "swap.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"unseen share of test rows: {np.mean(masks['user_unseen']):.3f}")
