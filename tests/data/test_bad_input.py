"""Bad input: a one-line error naming the file (and line) and what was expected; nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cp_dist.cli import main
from cp_dist.data.fetch import fetch_raw
from cp_dist.data.prepare import PrepareOptions, prepare
from cp_dist.errors import UserError
from tests.helpers import insert_lines


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_missing_file(make_synth, tmp_path: Path) -> None:
    raw = make_synth("ml-1m", rows=500)
    (raw / "users.dat").unlink()
    with pytest.raises(UserError, match=r"users\.dat: file not found"):
        prepare("ml-1m", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_missing_raw_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="raw data directory not found"):
        prepare("ml-1m", tmp_path / "nowhere", tmp_path / "out")


def test_unknown_dataset_on_the_command_line(tmp_path: Path, capsys) -> None:
    assert main(["data", "prepare", "--dataset", "ml-20m", "--raw", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown data set 'ml-20m'" in err and "goodreads" in err


def test_empty_result(make_synth, tmp_path: Path) -> None:
    raw = make_synth("ml-1m", rows=500)
    (raw / "ratings.dat").write_text("1::1::3::978300760\n2::1::3::978300761\n", encoding="iso-8859-1")
    with pytest.raises(UserError, match=r"ratings\.dat: no interaction is left .*dropped_by_label_rule=2"):
        prepare("ml-1m", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_rating_outside_the_label_rule(make_synth, tmp_path: Path) -> None:
    raw = make_synth("ml-1m", rows=500)
    insert_lines(raw / "ratings.dat", {7: "1::1::7::978300760"}, "iso-8859-1")
    with pytest.raises(UserError, match=r"ratings\.dat:7: rating 7.0 does not fit the label rule \(ratings in 1\.\.5"):
        prepare("ml-1m", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_wrong_header(ml100k_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
        (raw / name).write_bytes((ml100k_raw / name).read_bytes())
    lines = (raw / "ml-100k.user").read_text().splitlines()
    (raw / "ml-100k.user").write_text("\n".join(["user_id:token\tage:token"] + lines[1:]) + "\n")
    with pytest.raises(UserError, match=r"ml-100k\.user:1: header is .*expected \['user_id:token', 'age:token', 'gender"):
        prepare("ml-100k", raw, tmp_path / "out")


def test_time_split_without_timestamps(make_synth, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="bookcrossing has no timestamps.*--split random"):
        prepare("bookcrossing", make_synth("bookcrossing", rows=500), tmp_path / "out", PrepareOptions(split="time"))


def test_existing_output_is_kept(make_synth, tmp_path: Path) -> None:
    raw = make_synth("ml-1m", rows=800)
    out = tmp_path / "out"
    prepare("ml-1m", raw, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        prepare("ml-1m", raw, out)
    # A failing run with --overwrite must not destroy what was there.
    insert_lines(raw / "ratings.dat", {3: "1::1::9::978300760"}, "iso-8859-1")
    with pytest.raises(UserError, match="does not fit the label rule"):
        prepare("ml-1m", raw, out, PrepareOptions(overwrite=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_truncated_gzip(make_synth, tmp_path: Path) -> None:
    raw = make_synth("goodreads", rows=2000)
    path = raw / "goodreads_interactions_dedup.json.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"goodreads_interactions_dedup\.json\.gz: cannot read past line"):
        prepare("goodreads", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fetching_a_licensed_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'goodreads' cannot be fetched .* fetchable: ml-100k"):
        fetch_raw("goodreads", tmp_path)


@pytest.mark.parametrize("options, message", [
    (PrepareOptions(ratios=(0.5, 0.5, 0.5)), r"--ratios \(0.5, 0.5, 0.5\): expected three positive fractions that sum to 1"),
    (PrepareOptions(min_count=-1), "--min-count -1: expected an integer >= 0"),
    (PrepareOptions(split="weekly"), "--split 'weekly': expected 'time' or 'random'"),
])
def test_bad_options(options: PrepareOptions, message: str, tmp_path: Path) -> None:
    """Options are checked before the raw directory (empty here) is read."""
    with pytest.raises(UserError, match=message):
        prepare("ml-1m", tmp_path, tmp_path / "out", options)
