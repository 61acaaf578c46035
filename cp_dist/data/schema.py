"""What a data set is made of: its fields, its label rule, and the raw tables a reader yields."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

Side = Literal["user", "item"]

#: Text written for a value that the raw files leave empty.
MISSING_VALUE = "unknown"


@dataclass(frozen=True)
class Field:
    """One categorical field: its column name, its phrase in the text view, and which side holds it."""

    name: str
    title: str
    side: Side


@dataclass(frozen=True)
class LabelRule:
    """Turns a raw rating into a 0/1 click label, or drops the row.

    Ratings outside [min_rating, max_rating] are an error, not a label: they mean the file is
    not the format we think it is.
    """

    min_rating: float
    max_rating: float
    positive_at_least: float
    drop: tuple[float, ...] = ()

    def describe(self) -> str:
        dropped = f"drop rating {', '.join(f'{d:g}' for d in self.drop)}; " if self.drop else ""
        return (
            f"ratings in {self.min_rating:g}..{self.max_rating:g}; {dropped}"
            f"label 1 if rating >= {self.positive_at_least:g}, else 0"
        )

    def out_of_range(self, ratings: np.ndarray) -> np.ndarray:
        """Boolean mask of ratings the rule does not accept (NaN included)."""
        return ~((ratings >= self.min_rating) & (ratings <= self.max_rating))

    def kept(self, ratings: np.ndarray) -> np.ndarray:
        return ~np.isin(ratings, self.drop) if self.drop else np.ones(len(ratings), dtype=bool)

    def labels(self, ratings: np.ndarray) -> np.ndarray:
        return (ratings >= self.positive_at_least).astype(np.int8)


#: Columns of every interaction chunk a reader yields.
INTERACTION_SCHEMA = pa.schema(
    [
        ("user_key", pa.string()),
        ("item_key", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),  # null where the data set has no time
        ("line", pa.int64()),  # 1-based line in the source file, for error messages
    ]
)


@dataclass
class RawTables:
    """What a format reader hands to the generic preparation.

    users / items: one row per key, column "key" plus one string column per field of that side.
    users is None when the data set has no user file; the user field is then the key itself.
    interactions: chunks with INTERACTION_SCHEMA, read lazily so memory stays bounded.
    """

    users: pa.Table | None
    items: pa.Table
    interactions: Iterator[pa.Table]
    interactions_file: str
