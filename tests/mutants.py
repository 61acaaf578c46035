"""`make mutants`: break the model on purpose, one way at a time, and check that a test notices.

Each mutation below is a small semantic change a reviewer could make by mistake (prompts that ignore
their row, FM without its pairwise term, the PLM trained at the CTR side's learning rate, ...). For
each, a copy of the repository gets the change, the tests that guard it run against the copy, and
the mutation is "caught" when they fail. Prints a table; exits 1 if any mutation survives. Not part
of `make test` (it runs the guarding tests once per mutation: a few minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


SEMANTICS = "tests/clickprompt/test_semantics.py"
MUTATIONS = [
    Mutation("prompts independent of the ID row (generator reads q * 0)", "cp_dist/clickprompt/model.py",
             'prompts = self.generator(q if prompts_from == "own" else q[derangement(len(q), q.device)])',
             'prompts = self.generator((q if prompts_from == "own" else q[derangement(len(q), q.device)]) * 0)',
             (SEMANTICS + "::test_prompts_change_with_the_id_row",)),
    Mutation("prompts dropped entirely", "cp_dist/clickprompt/model.py",
             'if self.generator is not None and prompts_from != "none":', "if False:",
             (SEMANTICS, "tests/clickprompt/test_fusion.py")),
    Mutation("fusion weight a on the PLM side", "cp_dist/clickprompt/model.py",
             "fused = a * y_ctr + (1 - a) * y_plm", "fused = (1 - a) * y_ctr + a * y_plm",
             (SEMANTICS + "::test_the_fused_logit_weighs_the_ctr_tower_by_a",)),
    Mutation("FM without its second-order term", "cp_dist/ctr/backbones/fm.py",
             "torch.cat([fields.flatten(1), bi_interaction(fields)], dim=1)",
             "torch.cat([fields.flatten(1), 0 * bi_interaction(fields)], dim=1)", ("tests/ctr/test_formulas.py",)),
    Mutation("DCNv2 with its cross layers off", "cp_dist/ctr/backbones/dcnv2.py",
             "x = x0 * layer(x) + x", "x = x", ("tests/ctr/test_formulas.py",)),
    Mutation("IPNN without the inner products", "cp_dist/ctr/backbones/ipnn.py",
             "pairwise_inner_products(fields)], dim=1)", "0 * pairwise_inner_products(fields)], dim=1)",
             ("tests/ctr/test_formulas.py",)),
    Mutation("finetuning without the PLM ignores its PA-MLM start", "cp_dist/training/stages/base.py",
             "return None if checkpoint is None else Start(checkpoint, self.start_prefix, self.fresh, self.settings.start_tables)",
             "return None",
             (SEMANTICS + "::test_without_plm_starts_from_the_pamlm_tables_and_backbone",)),
    Mutation("PLM parameters at the CTR side's learning rate", "cp_dist/training/stages/clickprompt.py",
             'return self.settings.plm_lr if ".masked_lm." in f".{name}" else self.settings.dense_lr',
             "return self.settings.dense_lr", (SEMANTICS,)),
    Mutation("the fusion weight weight-decayed", "cp_dist/training/stages/base.py",
             'NO_DECAY = ("bias", "LayerNorm.weight", "fusion_logit")', 'NO_DECAY = ("bias", "LayerNorm.weight")',
             (SEMANTICS + "::test_finetuning_optimizer_groups_and_a_frozen_plm",)),
    Mutation("the fresh MLM head at the PLM's learning rate", "cp_dist/training/stages/pamlm.py",
             "if self.settings.mlm_head_lr is None:", "if True:", (SEMANTICS + "::test_pamlm_optimizer_groups",)),
    Mutation("PyTorch's default init instead of xavier", "cp_dist/ctr/layers.py",
             'if scheme == "torch":\n        return', "return", (SEMANTICS,)),
    Mutation("whole-field masking selects single tokens", "cp_dist/clickprompt/masking.py",
             "selected = select_fields(token_fields, field_draws, self.probability, self.maskable) & ~special",
             "selected = (draws[0] < self.probability) & ~special", ("tests/clickprompt/test_masking.py",)),
    Mutation("mask_fields ignored: every field may be masked", "cp_dist/clickprompt/masking.py",
             "present = present[:, 1:] & maskable", "present = present[:, 1:]",
             ("tests/clickprompt/test_masking.py",)),
    Mutation("the comparison reports validation AUC as test AUC", "cp_dist/experiments/comparison.py",
             'auc = [r["test"]["auc"] for r in variant_runs]', 'auc = [r["valid"]["auc"] for r in variant_runs]',
             ("tests/experiments/test_comparison.py::test_every_variant_over_two_seeds_then_resume",)),
    Mutation("preparation options not validated", "cp_dist/data/prepare.py",
             "    options.validate()\n", "", ("tests/data/test_bad_input.py::test_bad_options",)),
    Mutation("CTRL's gathered negatives carry no gradient back to their rank", "cp_dist/baselines/ctrl.py",
             "everyone = dist.get_rank(), torch.cat(dist_nn.all_gather(pairs))",
             "everyone = dist.get_rank(), torch.cat(dist_nn.all_gather(pairs)).detach()",
             ("tests/baselines/test_ctrl.py::test_two_ranks_train_as_one_process",)),
    Mutation("CTRL's text side detached (the PLM does not learn)", "cp_dist/baselines/ctrl.py",
             "F.normalize(self.text_projection(text), dim=-1)", "F.normalize(self.text_projection(text.detach()), dim=-1)",
             ("tests/baselines/test_ctrl.py::test_forward_and_backward",)),
    Mutation("ranking requests drop the user's fields", "cp_dist/serving/ranking.py",
             "request = bytearray(self._pack_request(*self.request_indices(user)))",
             "request = bytearray(self._pack_request(*[0] * len(self._lookups)))",
             ("tests/serving/test_serving.py::test_ranking_requests_score_as_raw_rows",)),
    Mutation("batched requests' scores returned in the wrong order", "cp_dist/serving/endpoint.py",
             "return np.split(scores, np.cumsum([len(r[0]) for r in requests])[:-1])",
             "return np.split(scores, np.cumsum([len(r[0]) for r in requests])[:-1])[::-1]",
             ("tests/serving/test_serving.py::test_endpoint_ranks_rejects_bad_requests_and_keeps_serving",)),
    Mutation("assembled token ids never truncated", "cp_dist/data/tokens.py",
             "body = np.minimum(row_lengths, self.max_length - len(self.prefix) - len(self.suffix))", "body = row_lengths",
             ("tests/data/test_tokens.py::test_wordpiece_assembly_equals_row_tokenization_on_every_row",)),
    Mutation("every rank decodes every logical shard", "cp_dist/data/loader.py",
             "return range(first // per_shard, -(-(first + per_rank) // per_shard))", "return range(len(self.shards))",
             ("tests/data/test_loader.py",)),
    Mutation("a resume decodes the windows it skips", "cp_dist/data/loader.py",
             "while self.windows and rows >= (size := sum(p.rows for p in self.windows[0])):",
             "while False and self.windows and rows >= (size := sum(p.rows for p in self.windows[0])):",
             ("tests/data/test_loader.py",)),
    Mutation("predictions left in the ranks' batch order", "cp_dist/training/evaluate.py",
             "return np.concatenate(parts)[np.argsort(np.concatenate(rows), kind=\"stable\")]", "return np.concatenate(parts)",
             ("tests/distributed/test_sharding.py::test_checkpoint_reloads_to_identical_predictions",)),
    Mutation("checkpoint digests not checked", "cp_dist/io.py",
             "        found = file_digest(path)\n        if found != digest:", "        found = digest\n        if False:",
             ("tests/distributed/test_checkpoint.py",)),
]


def _copy_of_repository(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run(mutation: Mutation, scratch: Path) -> tuple[bool, float]:
    """(caught, seconds): whether the guarding tests fail on a copy with the mutation applied."""
    copy = scratch / "repo"
    shutil.rmtree(copy, ignore_errors=True)
    _copy_of_repository(copy)
    path = copy / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.path}: the code to mutate for {mutation.name!r} is not there once; update tests/mutants.py")
    path.write_text(text.replace(mutation.old, mutation.new))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests], cwd=copy,
                          env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True, check=False)
    return done.returncode != 0, time.perf_counter() - started


def main() -> None:
    """`python tests/mutants.py [WORD ...]`: every mutation, or those whose name holds one of the words."""
    words = sys.argv[1:]
    chosen = [m for m in MUTATIONS if not words or any(w in m.name for w in words)]
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cp_dist-mutants-") as scratch:
        for mutation in chosen:
            caught, seconds = run(mutation, Path(scratch))
            rows.append((mutation, caught))
            print(f"{'caught  ' if caught else 'SURVIVED'} {seconds:6.1f} s  {mutation.name}", flush=True)
    survived = [m.name for m, caught in rows if not caught]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutations caught in {time.perf_counter() - started:.0f} s")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
