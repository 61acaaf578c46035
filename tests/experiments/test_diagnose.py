"""The alignment diagnostics can fail: on data where a masked value can only come from the prompts,
PA-MLM makes own prompts recover it far better than shuffled ones; with prompts that carry nothing
about their row (the generator reads q * 0) the gap is gone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cp_dist.clickprompt.generator import PromptGenerator
from cp_dist.config import load_config
from cp_dist.data.meta import SPLITS, DatasetMeta, FieldMeta
from cp_dist.data.tokens import tokenize_splits
from cp_dist.experiments.diagnose import diagnose_run
from tests.helpers import run

pytestmark = pytest.mark.slow
ITEMS, WORDS = 40, ["red", "green", "blue", "black", "white", "yellow", "orange", "purple"]


@pytest.fixture(scope="module")
def secret_data(setup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rows of (item, colour): the item's text is the same for every item ("item is thing."), and
    its colour is fixed by the item. A masked colour can come from the item's id alone, which only
    the CTR model (hence the prompts) reads."""
    base, _ = setup
    data = tmp_path_factory.mktemp("secret") / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    fields = (FieldMeta("item", "Item", "item", ITEMS + 1, 0), FieldMeta("colour", "Colour", "item", len(WORDS) + 1, ITEMS + 1))
    sizes = {"train": 2400, "valid": 512, "test": 256}
    for split in SPLITS:
        items = rng.integers(1, ITEMS + 1, sizes[split])
        colours = items % len(WORDS)
        pq.write_table(pa.table({
            "item": pa.array(items, pa.int32()), "colour": pa.array(colours + 1, pa.int32()),
            "label": pa.array(rng.integers(0, 2, sizes[split]), pa.int8()),
            "item_text": pa.array(["thing"] * sizes[split]), "colour_text": pa.array([WORDS[c] for c in colours]),
        }), data / f"{split}.parquet")
    DatasetMeta(dataset="ml-1m", fields=fields, splits={s: {"rows": n} for s, n in sizes.items()}, label_rule="random",
                split={"method": "random"}, min_count=1, has_timestamp=False, sources=[], counts={}, malformed=[],
                created_by="tests").save(data)
    tokenize_splits(data, str(base / "tiny-bert"), max_length=16)
    return data


def _pretrain(setup, data: Path, out: Path, epochs: int = 8) -> dict:
    _, settings = setup
    config = load_config("ml-1m", [*settings, "pamlm.masking=fields", "pamlm.mask_probability=0.5", f"pamlm.epochs={epochs}",
                                   "pamlm.global_batch_size=64", "pamlm.plm_lr=1e-3", "pamlm.dense_lr=3e-3",
                                   "pamlm.embedding_lr=0.05", "ctr.embedding_dim=8", "pamlm.diagnose_rows=256"])
    run("pamlm", data, out, config)
    return diagnose_run(out, data, rows=256)


def test_own_prompts_recover_what_only_they_know(setup, secret_data: Path, tmp_path: Path) -> None:
    diagnosis = _pretrain(setup, secret_data, tmp_path / "aligned")
    print({k: round(v, 3) for k, v in diagnosis.items() if isinstance(v, float)})
    assert diagnosis["mlm_value_gap"] > 1.0, diagnosis
    assert diagnosis["mlm_value_ce_own"] < 0.5 * diagnosis["mlm_value_ce_none"], diagnosis
    assert diagnosis["generator_saturated_share"] < 0.5 and diagnosis["generator_hidden_std"] > 0.05, diagnosis
    by_field = {e["field"]: e for e in diagnosis["value_by_field"]}
    assert by_field["colour"]["gap"] > 1.0 and abs(by_field["item"]["gap"]) < 0.2, "the gap is the colour's: only the id knows it"
    tokens = sum(e["tokens"] for e in by_field.values())
    assert tokens == diagnosis["mlm_value_tokens"]
    for source in ("own", "shuffled"):  # the fields' cross-entropies, weighted by tokens, are the whole
        whole = sum(e["tokens"] * e[f"ce_{source}"] for e in by_field.values()) / tokens
        assert whole == pytest.approx(diagnosis[f"mlm_value_ce_{source}"], rel=1e-4)


def test_prompts_cut_off_from_their_row_show_no_gap(setup, secret_data: Path, tmp_path: Path, monkeypatch) -> None:
    generate = PromptGenerator.forward
    monkeypatch.setattr(PromptGenerator, "forward", lambda self, q: generate(self, q * 0))
    # Two epochs are enough: a prompt that reads q * 0 is one constant for every row however long it trains.
    diagnosis = _pretrain(setup, secret_data, tmp_path / "constant", epochs=2)
    print({k: round(v, 3) for k, v in diagnosis.items() if isinstance(v, float)})
    assert abs(diagnosis["mlm_value_gap"]) < 0.05, diagnosis
    assert all(abs(e["gap"]) < 0.05 for e in diagnosis["value_by_field"]), diagnosis["value_by_field"]
