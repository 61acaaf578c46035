"""Ranking requests: one user, many candidate items named by id.

A ranking service scores the same items for user after user, so the item side is encoded once: the
ItemCatalogue holds every item of the prepared data (all splits) as one [items + 1, F] tensor of
field indices, zero in the other columns, kept on the serving device. A request then costs one
lookup per candidate in a native hash table of the item keys (KeyIndex, cp_dist/serving/_key_index.c),
which on the host also writes the candidate's row of ids, and the user's few fields encoded once; no
item value is sent or re-encoded. The item key is the first item-side field (every data format's item id). Row 0 is the
unknown item: all its fields out of vocabulary (index 0), as a value never seen in training would
be. Fields not on the item side (the user's, and context fields where a data set
has them) come with the request. With-PLM runs also render each row's text, the items' part from
the catalogue's readable values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from cp_dist.data.columns import first_per_key
from cp_dist.data.meta import SPLITS, DatasetMeta, FieldMeta
from cp_dist.data.schema import MISSING_VALUE
from cp_dist.errors import UserError
from cp_dist.serving._key_index import KeyIndex
from cp_dist.serving.scorer import Scorer, is_hashable


class ItemCatalogue:
    """Every item's field indices (one array) and readable values, by the item key's raw value."""

    def __init__(self, fields: Sequence[FieldMeta], values: pa.Table, indices: np.ndarray):
        self.fields = list(fields)
        self.columns = [k for k, f in enumerate(self.fields) if f.side == "item"]
        if not self.columns:
            raise UserError("the data has no item-side field; ranking requests name items by their key")
        self.key = self.fields[self.columns[0]]
        self.values = values  # the item fields' text columns; row 0: the unknown item
        self.indices = np.ascontiguousarray(indices, dtype=np.int64)  # [items + 1, F]
        self._index = KeyIndex(values[self.key.text_column].to_pylist()[1:])

    @classmethod
    def from_data(cls, data_dir: Path, meta: DatasetMeta | None = None) -> ItemCatalogue:
        """The first row of every item key over all splits (item fields are joined per item, so
        every row of an item holds the same values)."""
        meta = meta or DatasetMeta.load(data_dir)
        item_fields = [f for f in meta.fields if f.side == "item"]
        columns = [f.name for f in item_fields] + [f.text_column for f in item_fields]
        table = pa.concat_tables(meta.read_split(data_dir, split, columns) for split in SPLITS)
        table, _ = first_per_key(table, key=item_fields[0].text_column) if item_fields else (table, 0)
        indices = np.zeros((table.num_rows + 1, len(meta.fields)), dtype=np.int64)
        for column, f in enumerate(meta.fields):
            if f.side == "item":
                indices[1:, column] = table[f.name].to_numpy()
        unknown = pa.table({f.text_column: [MISSING_VALUE] for f in item_fields})
        values = pa.concat_tables([unknown, table.select([f.text_column for f in item_fields])])
        return cls(meta.fields, values, indices)

    def __len__(self) -> int:
        return len(self.indices) - 1

    def rows(self, items: Sequence[object]) -> np.ndarray:
        """Each item's catalogue row; 0 (the unknown item) for keys the data never held. A number
        stands for its string form (242 for "242")."""
        rows = np.empty(len(items), dtype=np.int64)
        self._lookup(self._index.rows, items, rows)
        return rows

    def ids(self, items: Sequence[object], request_row: np.ndarray) -> np.ndarray:
        """[len(items), F]: the request's row of indices plus each item's, in one native pass."""
        ids = np.empty((len(items), self.indices.shape[1]), dtype=np.int64)
        self._lookup(self._index.add_rows, items, self.indices, request_row, ids)
        return ids

    def _lookup(self, method, items: Sequence[object], *buffers: np.ndarray) -> None:
        try:
            method(items, *buffers)
        except TypeError as err:  # an item neither a string nor a number: "items[3]: a list"
            raise UserError(f"{err}; expected an item id ({self.key.name}, a string or a number)") from None


class Ranker:
    """Click probabilities of one user's candidate items, from a train-ctr or finetune run."""

    def __init__(self, scorer: Scorer, catalogue: ItemCatalogue):
        self.scorer, self.catalogue = scorer, catalogue
        vocabularies = scorer.vocabularies
        self.request_fields = [(k, f) for k, f in enumerate(vocabularies.fields) if f.side != "item"]
        self._request_columns = [k for k, _ in self.request_fields]
        self._lookups = [(f.name, vocabularies.index(f.name)) for _, f in self.request_fields]
        self._width = len(vocabularies.fields)
        # On the host the catalogue writes a request's ids itself (ItemCatalogue.ids); on a GPU the
        # catalogue lives there and only the row numbers cross.
        self._on_host = scorer.device.type == "cpu"
        self._item_indices = catalogue.indices if self._on_host else torch.from_numpy(catalogue.indices).to(scorer.device)

    @classmethod
    def from_run(cls, run_dir: Path, data_dir: Path, device: torch.device | str = "cpu") -> Ranker:
        scorer = Scorer.from_run(run_dir, data_dir, device)
        return cls(scorer, ItemCatalogue.from_data(data_dir))

    def request_indices(self, user: Mapping[str, object]) -> list[int]:
        """The indices of the user's (and context) fields, in `request_fields` order."""
        try:
            return [index[user[name]] for name, index in self._lookups]
        except KeyError:  # a field the user lacks (an unseen value maps to 0, never raises)
            missing = next(name for name, _ in self._lookups if name not in user)
            expected = ", ".join(name for name, _ in self._lookups)
            raise UserError(f"user has no field {missing!r}; expected all of {expected}") from None
        except TypeError:  # an unhashable value: a list, a dict
            name = next(name for name, _ in self._lookups if not is_hashable(user[name]))
            raise UserError(f"field {name!r}: a {type(user[name]).__name__} value; expected one value "
                            "(a string or a number)") from None

    def encode_user(self, user: Mapping[str, object]) -> np.ndarray:
        """[F]: the user's (and context) fields' indices, zero in the item columns."""
        row = [0] * self._width
        for column, index in zip(self._request_columns, self.request_indices(user)):
            row[column] = index
        return np.array(row, dtype=np.int64)

    def inputs(self, user: Mapping[str, object], items: Sequence[object]) -> tuple[torch.Tensor, ...]:
        """The model's inputs for a request: ids, and for a with-PLM model token ids and mask."""
        request_row = self.encode_user(user)
        if self._on_host and not self.scorer.reads_text:
            return (torch.from_numpy(self.catalogue.ids(items, request_row)),)
        rows = self.catalogue.rows(items)
        if self._on_host:
            ids = torch.from_numpy(self._item_indices[rows] + request_row)
        else:
            device = self.scorer.device
            ids = self._item_indices.index_select(0, torch.from_numpy(rows).to(device)) + torch.from_numpy(request_row).to(device)
        if not self.scorer.reads_text:
            return (ids,)
        return ids, *self.scorer.tokens(self._text_columns(user, items, rows))

    def _text_columns(self, user: Mapping[str, object], items: Sequence[object], rows: np.ndarray) -> pa.Table:
        columns = {f.text_column: pa.array([str(user[f.name])] * len(items)) for _, f in self.request_fields}
        item_values = self.catalogue.values.take(rows)
        columns |= {name: item_values[name] for name in item_values.column_names}
        columns[self.catalogue.key.text_column] = pa.array([str(item) for item in items])  # unknown items keep theirs
        return pa.table(columns)

    def score(self, user: Mapping[str, object], items: Sequence[object]) -> np.ndarray:
        if not items:
            self.encode_user(user)  # a bad user is still an error
            return np.zeros(0, dtype=np.float32)
        return self.scorer.probabilities(*self.inputs(user, items))


def concat_inputs(requests: list[tuple[torch.Tensor, ...]], pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """Several requests' model inputs as one batch (the endpoint's dynamic batching); token ids
    padded to the longest request, with attention mask 0 there."""
    if len(requests[0]) == 1:
        return (torch.cat([r[0] for r in requests]),)
    longest = max(r[1].shape[1] for r in requests)

    def pad(tensor: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, longest - tensor.shape[1]), value=value)

    return (torch.cat([r[0] for r in requests]), torch.cat([pad(r[1], pad_token_id) for r in requests]),
            torch.cat([pad(r[2], 0) for r in requests]))
