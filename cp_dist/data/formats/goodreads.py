"""GoodReads (UCSD Book Graph): interactions with dates, books, genres and authors, all gzip JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from cp_dist.data.columns import first_per_key, list_element_at
from cp_dist.data.formats.base import RawFormat, json_interactions, json_side_table
from cp_dist.data.lines import RawFile
from cp_dist.data.schema import Field, LabelRule

INTERACTION_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("book_id", pa.string()), ("rating", pa.int64()), ("date_added", pa.string())]
)
BOOK_TEXT_COLUMNS = (
    "title", "average_rating", "text_reviews_count", "num_pages", "is_ebook",
    "format", "publisher", "publication_year", "work_id",
)
BOOK_SCHEMA = pa.schema(
    [("book_id", pa.string())]
    + [(c, pa.string()) for c in BOOK_TEXT_COLUMNS]
    + [("authors", pa.list_(pa.struct([("author_id", pa.string()), ("role", pa.string())])))]
)
AUTHOR_SCHEMA = pa.schema([("author_id", pa.string()), ("name", pa.string())])
#: e.g. "Mon Aug 01 13:41:57 -0700 2016"
DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"

#: "Media type" is not a raw column: we derive it from the edition format (inferred, documented).
MEDIA_TYPES = {
    "audio": ("audio", "audible", "mp3", "cd"),
    "ebook": ("kindle", "ebook", "nook", "e-book", "digital"),
}


def media_type(book_format: str | None) -> str | None:
    if not book_format:
        return None
    lowered = book_format.lower()
    for media, markers in MEDIA_TYPES.items():
        if any(m in lowered for m in markers):
            return media
    return "print"


class GoodReads(RawFormat):
    name = "goodreads"
    #: rating 0 means "shelved, not rated": dropped.
    label_rule = LabelRule(min_rating=0, max_rating=5, positive_at_least=4, drop=(0,))
    file_names = {
        "interactions": ("goodreads_interactions_dedup.json.gz",),
        "books": ("goodreads_books.json.gz",),
        "genres": ("goodreads_book_genres_initial.json.gz",),
        "authors": ("goodreads_book_authors.json.gz",),
    }
    fields = (
        Field("user_id", "User ID", "user"),
        Field("book_id", "Book ID", "item"),
        Field("title", "Book title", "item"),
        Field("genres", "Book genres", "item"),
        Field("average_rating", "Average rating", "item"),
        Field("text_reviews_count", "Number of book reviews", "item"),
        Field("author_id", "Author ID", "item"),
        Field("author_name", "Author name", "item"),
        Field("num_pages", "Number of pages", "item"),
        Field("is_ebook", "eBook flag", "item"),
        Field("format", "Format", "item"),
        Field("publisher", "Publisher", "item"),
        Field("publication_year", "Publication year", "item"),
        Field("work_id", "Work ID", "item"),
        Field("media_type", "Media type", "item"),
    )

    interactions_role = "interactions"

    def read_side_tables(self, files: dict[str, RawFile]) -> tuple[None, pa.Table]:
        books = json_side_table(files["books"], BOOK_SCHEMA, "book_id")
        first_author = list_element_at(books["authors"], "first").field("author_id")
        books = books.drop_columns("authors").append_column("author_id", first_author)
        authors, _ = first_per_key(json_side_table(files["authors"], AUTHOR_SCHEMA, "author_id"), "author_id")
        genres, _ = first_per_key(self._top_genres(files["genres"]), "book_id")
        # Left joins on de-duplicated keys: one output row per book, books without a match kept.
        books = books.join(authors.rename_columns(["author_id", "author_name"]), "author_id", join_type="left outer")
        books = books.join(genres, "book_id", join_type="left outer")
        formats = books["format"].combine_chunks().dictionary_encode()
        media = pa.array([media_type(v) for v in formats.dictionary.to_pylist()], pa.string())
        items = pa.table(
            {
                "key": books["book_id"],
                "book_id": books["book_id"],
                **{name: books[name] for name in ("title", "genres", "average_rating", "text_reviews_count",
                                                   "author_id", "author_name", "num_pages", "is_ebook", "format",
                                                   "publisher", "publication_year", "work_id")},
                "media_type": media.take(formats.indices),
            }
        )
        return None, items

    def read_interactions(self, raw: RawFile) -> Iterator[pa.Table]:
        return json_interactions(
            raw,
            INTERACTION_SCHEMA,
            user="user_id",
            item="book_id",
            rating="rating",
            timestamp="date_added",
            parse_time=lambda dates: pc.strptime(dates, format=DATE_FORMAT, unit="s", error_is_null=True).cast(pa.int64()),
        )

    @staticmethod
    def _top_genres(raw: RawFile) -> pa.Table:
        """book_id -> the genre group with the most shelf votes (ties: alphabetical)."""
        book_ids, genres = [], []
        for line_no, text in raw.decoded_lines():
            if not text.strip():
                continue
            try:
                record = json.loads(text)
                votes = record["genres"]
                book_ids.append(str(record["book_id"]))
                genres.append(min(votes, key=lambda g: (-votes[g], g)) if votes else None)
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raw.bad_line(line_no, f"expected {{'book_id': ..., 'genres': {{name: votes}}}} ({err!r})")
        return pa.table({"book_id": pa.array(book_ids, pa.string()), "genres": pa.array(genres, pa.string())})
