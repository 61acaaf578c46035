"""Book-Crossing (Ziegler et al. 2005): three `;`-separated, quoted, ISO-8859-1 CSV files.

The data set has no timestamps, so only the random split applies.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from cp_dist.data.formats.base import (
    InteractionBuffer,
    RawFormat,
    SideTableBuilder,
    check_header,
    delimited_rows,
    split_csv,
)
from cp_dist.data.lines import RawFile
from cp_dist.data.schema import Field, LabelRule


def _isbn(raw: str) -> str:
    """Ratings and books disagree on ISBN case ('x' vs 'X') and padding; join on a normal form."""
    return raw.strip().upper()


class BookCrossing(RawFormat):
    name = "bookcrossing"
    encoding = "iso-8859-1"
    has_timestamp = False
    #: Explicit ratings are 1..10; 0 is an implicit interaction and counts as a negative.
    label_rule = LabelRule(min_rating=0, max_rating=10, positive_at_least=5)
    file_names = {"ratings": ("BX-Book-Ratings.csv",), "users": ("BX-Users.csv",), "books": ("BX-Books.csv",)}
    headers = {
        "ratings": ("User-ID", "ISBN", "Book-Rating"),
        "users": ("User-ID", "Location", "Age"),
        "books": (
            "ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher",
            "Image-URL-S", "Image-URL-M", "Image-URL-L",
        ),
    }
    fields = (
        Field("user_id", "User ID", "user"),
        Field("location", "Location", "user"),
        Field("age", "Age", "user"),
        Field("isbn", "ISBN", "item"),
        Field("book_title", "Book title", "item"),
        Field("author", "Author", "item"),
        Field("year", "Publication year", "item"),
        Field("publisher", "Publisher", "item"),
    )

    interactions_role = "ratings"

    def read_side_tables(self, files: dict[str, RawFile]) -> tuple[pa.Table, pa.Table]:
        csv_split = split_csv(";")
        for role, header in self.headers.items():
            check_header(files[role], header, csv_split)

        user_table = SideTableBuilder("user_id", "location", "age")
        for _, (user, location, age) in delimited_rows(files["users"], csv_split, 3, skip_header=True):
            user_table.add(user, user, location, None if age == "NULL" else age)
        item_table = SideTableBuilder("isbn", "book_title", "author", "year", "publisher")
        for _, (isbn, title, author, year, publisher, *_urls) in delimited_rows(
            files["books"], csv_split, 8, skip_header=True
        ):
            item_table.add(_isbn(isbn), isbn, title, author, year, publisher)
        return user_table.table(), item_table.table()

    def read_interactions(self, raw: RawFile) -> Iterator[pa.Table]:
        rows = (
            (n, user, _isbn(isbn), rating, None)
            for n, (user, isbn, rating) in delimited_rows(raw, split_csv(";"), 3, skip_header=True)
        )
        return InteractionBuffer(raw).drain(rows)
