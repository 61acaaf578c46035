"""Token ids assembled from per-value tokens equal the row text's tokenization, for MiniLM's
WordPiece and a byte-level BPE tokenizer built here, on every row of real ML-100K."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from cp_dist.data.loader import SplitLoader
from cp_dist.data.meta import SPLITS, DatasetMeta
from cp_dist.data.text import render_text
from cp_dist.data.tokens import ValueTokens, distinct_values, text_ids, tokenize_rows, tokenize_splits
from cp_dist.errors import UserError
from cp_dist.pretrained import load_tokenizer

# Values where a careless split would differ from the row text: trailing punctuation that merges with
# the template's '.', leading punctuation, contractions, runs of spaces, accents, digits, empty.
AWKWARD_TITLES = ["Dr.", "What?!", "(500) Days", "It's", "'s", "a  b", "  padded  ", "Amélie", "Ⅻ 12.5", "", "...", "x'"]


@pytest.fixture(scope="module")
def data(ml100k_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ML-100K with awkward titles written into its first training rows."""
    out = tmp_path_factory.mktemp("tokens") / "data"
    shutil.copytree(ml100k_prepared, out)
    table = pq.read_table(out / "train.parquet")
    titles = table["movie_title_text"].to_pylist()
    titles[: len(AWKWARD_TITLES)] = AWKWARD_TITLES
    table = table.set_column(table.schema.get_field_index("movie_title_text"), "movie_title_text", pa.array(titles, pa.string()))
    pq.write_table(table, out / "train.parquet", row_group_size=20_000)
    return out


def byte_level_bpe(data: Path, out: Path, normalizer=None) -> Path:
    """A small RoBERTa-style tokenizer (byte-level BPE, <s> ... </s>, trimmed offsets) trained on the data's text."""
    meta = DatasetMeta.load(data)
    texts = render_text(pq.read_table(data / "train.parquet").slice(0, 5000), meta.fields).to_pylist()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # add_prefix_space=True: offsets trimmed differently without special tokens (a bug found at 1M rows)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=True)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>").save_pretrained(out)
    return out


class CountingTokenizer:
    """A tokenizer that records every text it is asked to tokenize, through it or its Rust backend."""

    def __init__(self, tokenizer, texts: list[str] | None = None):
        self.tokenizer, self.texts = tokenizer, [] if texts is None else texts

    def _record(self, texts) -> None:
        self.texts.extend([texts] if isinstance(texts, str) else texts)

    def __call__(self, texts, **kwargs):
        self._record(texts)
        return self.tokenizer(texts, **kwargs)

    def encode(self, text, **kwargs):
        self._record(text)
        return self.tokenizer.encode(text, **kwargs)

    def encode_batch(self, texts, **kwargs):
        self._record(texts)
        return self.tokenizer.encode_batch(texts, **kwargs)

    @property
    def backend_tokenizer(self):
        return CountingTokenizer(self.tokenizer.backend_tokenizer, self.texts)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def assert_identical_on_every_row(data: Path, tokenizer_name: str, max_length: int) -> None:
    meta = tokenize_splits(data, tokenizer_name, max_length=max_length)
    tokenizer, tokens = load_tokenizer(tokenizer_name), ValueTokens.load(data)
    truncated = 0
    for split in SPLITS:
        table = pq.read_table(data / f"{split}.parquet")
        assert "input_ids" not in table.column_names, "no per-row token column is stored"
        want_ids, want_fields = tokenize_rows(tokenizer, table, meta.fields, max_length)
        ids, mask, fields = tokens.assemble(text_ids(table, meta.fields))
        lengths = mask.sum(1)
        assert lengths.tolist() == [len(row) for row in want_ids]
        assert np.concatenate(want_ids).tolist() == ids[mask == 1].tolist()
        assert np.concatenate(want_fields).tolist() == fields[mask == 1].tolist()
        assert (ids[mask == 0] == tokenizer.pad_token_id).all() and (fields[mask == 0] == -1).all()
        truncated += int((lengths == max_length).sum())
    assert truncated > 0, "max_length chosen so that truncation is exercised"


def test_wordpiece_assembly_equals_row_tokenization_on_every_row(data: Path) -> None:
    assert_identical_on_every_row(data, "minilm", max_length=48)


def test_byte_level_bpe_assembly_equals_row_tokenization_on_every_row(data: Path, tmp_path: Path) -> None:
    tokenizer = byte_level_bpe(data, tmp_path / "bpe")
    assert_identical_on_every_row(data, str(tokenizer), max_length=96)
    bpe = load_tokenizer(str(tokenizer))
    value_tokens = ValueTokens.load(data)
    first = value_tokens.value_offsets[0]
    assert bpe.convert_ids_to_tokens(value_tokens.ids[value_tokens.starts[first] : value_tokens.starts[first] + 1])[0].startswith("Ġ"), \
        "a value piece starts with the space BPE attaches to the word"


def test_each_distinct_value_is_tokenized_once(data: Path) -> None:
    meta = DatasetMeta.load(data)
    values = distinct_values(data, meta)
    for k, f in enumerate(meta.fields):
        every = pa.chunked_array([pq.read_table(data / f"{s}.parquet", columns=[f.text_column])[f.text_column] for s in SPLITS])
        assert sorted(values[k].to_pylist()) == sorted(pc.unique(every).to_pylist())
    assert set(AWKWARD_TITLES) <= set(values[[f.name for f in meta.fields].index("movie_title")].to_pylist())
    counting = CountingTokenizer(load_tokenizer("minilm"))
    ValueTokens.build(counting, meta.fields, values, 64)
    pieces = [f"is {v}." for field_values in values for v in field_values.to_pylist()]  # read after the template's 'is'
    fields = len(meta.fields)
    assert counting.texts[fields + 1 : fields + 1 + len(pieces)] == pieces, "each field's distinct values, each once"
    assert len(counting.texts) == fields + 1 + len(pieces) + 1  # + the templates, 'is' alone and the special-tokens probe


def test_the_loader_serves_assembled_ids(data: Path) -> None:
    meta = tokenize_splits(data, "minilm", max_length=64)
    tokenizer = load_tokenizer("minilm")
    table = pq.read_table(data / "valid.parquet").slice(0, 32)
    want_ids, want_fields = tokenize_rows(tokenizer, table, meta.fields, 64)
    batch = next(iter(SplitLoader(data, "valid", global_batch_size=32, text=True)))
    lengths = batch.attention_mask.sum(1)
    for row, (ids, fields) in enumerate(zip(want_ids, want_fields)):
        assert batch.input_ids[row, : lengths[row]].tolist() == ids
        assert batch.token_fields[row, : lengths[row]].tolist() == fields
    assert batch.input_ids.dtype == batch.token_fields.dtype == torch.int64
    assert not [p for p in data.iterdir() if p.name.startswith(".")]


def test_a_tokenizer_that_does_not_compose_is_refused(data: Path, tmp_path: Path) -> None:
    """A normalizer that rewrites '. ' across a piece boundary: values tokenized alone differ from the row text."""
    tokenizer = byte_level_bpe(data, tmp_path / "odd", normalizer=normalizers.Replace(". ", " ; "))
    with pytest.raises(UserError, match="does not give the row text's tokens"):
        tokenize_splits(data, str(tokenizer), max_length=64)
    assert DatasetMeta.load(data).tokenizer is None, "a failed tokenization leaves no tokenizer named"
    with pytest.raises(UserError, match="cp-dist data tokenize"):
        SplitLoader(data, "valid", global_batch_size=8, text=True)
