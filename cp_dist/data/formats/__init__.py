"""Registry of raw-format readers, one per data set."""

from __future__ import annotations

from cp_dist.data.formats.amazon import AmazonToys
from cp_dist.data.formats.base import RawFormat
from cp_dist.data.formats.bookcrossing import BookCrossing
from cp_dist.data.formats.goodreads import GoodReads
from cp_dist.data.formats.movielens import MovieLens1M, MovieLens100K
from cp_dist.errors import UserError

FORMATS: dict[str, type[RawFormat]] = {
    f.name: f for f in (MovieLens1M, MovieLens100K, BookCrossing, AmazonToys, GoodReads)
}


def get_format(name: str) -> RawFormat:
    try:
        return FORMATS[name]()
    except KeyError:
        raise UserError(f"unknown data set {name!r}; expected one of {', '.join(FORMATS)}") from None
