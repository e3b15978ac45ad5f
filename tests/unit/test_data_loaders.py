"""Loaders on real files (Yelp slice, MovieLens-100k) and on every field variant, plus bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from starrec.data import DataFormatError, load_dataset, write_dataset
from starrec.data.agentsociety import parse_time
from starrec.data.schema import Dataset


def write_layout(directory: Path, items: list[dict], users: list[dict], reviews: list[dict | str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, records in (("item.json", items), ("user.json", users), ("review.json", reviews)):
        lines = [record if isinstance(record, str) else json.dumps(record) for record in records]
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


def test_yelp_slice_loads_with_expected_counts(yelp_slice_dir: Path) -> None:
    dataset = load_dataset(yelp_slice_dir)
    assert (len(dataset.interactions), len(dataset.items), len(dataset.users)) == (4164, 432, 38)
    assert dataset.domain == "business"
    timestamps = [event.timestamp for event in dataset.interactions]
    assert timestamps == sorted(timestamps)
    first = dataset.interactions[0]
    assert first.review_id == "0zvXh6uOzQQxxB3g0zfeYQ" and first.stars == 5.0 and "deep dish" in first.text
    assert "Pizza" in dataset.item_categories(first.item_id)
    assert dataset.item_title("dIpTuL2T1L98GQGU17IeSw") == "The Bricks"


def test_movielens_100k_layout(ml100k_dir: Path, ml100k: Dataset) -> None:
    assert ml100k.stats() == {"users": 943, "items": 1682, "interactions": 100_000}
    assert ml100k.domain == "movie"
    toy_story = ml100k.items["1"]
    assert toy_story["title"] == "Toy Story" and toy_story["year"] == 1995
    assert ml100k.item_categories("1") == ["Animation", "Children's", "Comedy"]
    ml100k.item_categories("1").append("edited by a caller")  # memoised, but each call gets its own list
    assert ml100k.item_categories("1") == ["Animation", "Children's", "Comedy"]
    assert ml100k.users["1"] == {"user_id": "1", "age": 24, "gender": "M", "occupation": "technician",
                                 "zip": "85711"}
    assert {event.stars for event in ml100k.interactions} == {1.0, 2.0, 3.0, 4.0, 5.0}
    review = json.loads((ml100k_dir / "review.json").read_text().splitlines()[0])
    assert set(review) >= {"review_id", "user_id", "item_id", "stars", "text", "date", "timestamp"}
    assert review["date"].startswith("1997-")


def test_amazon_goodreads_yelp_field_variants(tmp_path: Path) -> None:
    amazon = write_layout(
        tmp_path / "amazon",
        [{"parent_asin": "B01", "title": "Kettle", "main_category": "Home", "categories": ["Kitchen"]}],
        [{"user_id": "A1"}],
        [{"user_id": "A1", "asin": "B01X", "parent_asin": "B01", "rating": 5.0, "text": "ok",
          "timestamp": 1_588_687_728_923}],
    )
    dataset = load_dataset(amazon)
    event = dataset.interactions[0]
    assert (dataset.domain, event.item_id, event.stars) == ("product", "B01", 5.0)
    assert event.timestamp == pytest.approx(1_588_687_728.923)

    goodreads = write_layout(
        tmp_path / "goodreads",
        [{"book_id": "42", "title": "Dune", "popular_shelves": [{"count": "3", "name": "sci-fi"}]}],
        [{"user_id": "g1"}],
        [{"user_id": "g1", "book_id": "42", "review_id": "rv", "rating": 4, "review_text": "great",
          "date_added": "Fri Aug 25 13:55:02 -0700 2017"}],
    )
    dataset = load_dataset(goodreads)
    event = dataset.interactions[0]
    assert (dataset.domain, event.item_id, event.text) == ("book", "42", "great")
    assert event.timestamp == 1_503_694_502.0
    assert dataset.item_categories("42") == ["sci-fi"]

    yelp = write_layout(
        tmp_path / "yelp",
        [{"business_id": "b1", "name": "Cafe", "categories": "Coffee & Tea, Food", "city": "Tampa"}],
        [{"user_id": "y1"}],
        [{"user_id": "y1", "business_id": "b1", "stars": "3", "text": "fine", "date": "2020-01-02 03:04:05"}],
    )
    dataset = load_dataset(yelp)
    event = dataset.interactions[0]
    assert (dataset.domain, event.item_id, event.stars) == ("business", "b1", 3.0)
    assert event.timestamp == 1_577_934_245.0
    assert dataset.item_categories("b1") == ["Coffee & Tea", "Food"]
    assert dataset.item_title("b1") == "Cafe"
    assert load_dataset(yelp, domain="product").domain == "product"


def test_write_then_load_round_trip(tiny_dataset: Dataset, tmp_path: Path) -> None:
    reloaded = load_dataset(write_dataset(tiny_dataset, tmp_path / "tiny"), domain="movie")
    assert reloaded.interactions == tiny_dataset.interactions
    assert reloaded.items == tiny_dataset.items and reloaded.users == tiny_dataset.users


def test_missing_file_names_it(tmp_path: Path) -> None:
    write_layout(tmp_path, [{"item_id": "i"}], [{"user_id": "u"}], [])
    (tmp_path / "user.json").unlink()
    with pytest.raises(DataFormatError, match=r"user\.json: .*file not found"):
        load_dataset(tmp_path)


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    good = {"user_id": "u", "item_id": "i", "stars": 1, "date": "2020-01-01"}
    write_layout(tmp_path, [{"item_id": "i"}], [{"user_id": "u"}], [good, good, '{"user_id": "u", '])
    with pytest.raises(DataFormatError, match=r"review\.json:3: malformed JSON") as info:
        load_dataset(tmp_path)
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("review", "field", "message"),
    [
        ({"user_id": "u", "item_id": "i", "stars": [5], "date": "2020-01-01"}, "stars", "must be a number"),
        ({"user_id": "u", "item_id": "i", "stars": "five", "date": "2020-01-01"}, "stars", "not a number"),
        ({"user_id": "u", "item_id": "i", "stars": 5, "date": "yesterday"}, "date", "unparsable date"),
        ({"user_id": "u", "item_id": "i", "stars": 5, "date": {"y": 1}}, "date", "date string"),
        ({"user_id": "u", "stars": 5, "date": "2020-01-01"}, "item_id", "missing id"),
        ({"user_id": ["u"], "item_id": "i", "stars": 5, "date": "2020-01-01"}, "user_id",
         "string or integer"),
        ({"user_id": "u", "item_id": "i", "stars": 5}, "date", "missing time"),
    ],
)
def test_bad_field_names_file_line_and_field(tmp_path: Path, review: dict, field: str, message: str) -> None:
    ok = {"user_id": "u", "item_id": "i", "stars": 5, "date": "2020-01-01"}
    write_layout(tmp_path, [{"item_id": "i"}], [{"user_id": "u"}], [ok, review])
    with pytest.raises(DataFormatError, match=message) as info:
        load_dataset(tmp_path)
    assert (info.value.line, info.value.field) == (2, field)
    assert f"review.json:2: field '{field}'" in str(info.value)


def test_duplicate_item_record_is_an_error(tmp_path: Path) -> None:
    write_layout(tmp_path, [{"item_id": "i"}, {"item_id": "i"}], [{"user_id": "u"}], [])
    with pytest.raises(DataFormatError, match=r"item\.json:2: field 'item_id': duplicate id 'i'"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    "date",
    ["1e300", "-1e300", "NaN", "Infinity", "-Infinity", "1" + "0" * 400, '"1e300"', '"nan"',
     '"0001-01-01T00:00:00+01:00"', '"99999-01-01"', '"' + "9" * 400 + '"'],
)
def test_impossible_dates_name_file_line_and_field(tmp_path: Path, date: str) -> None:
    ok = '{"user_id": "u", "item_id": "i", "stars": 5, "date": "2020-01-01"}'
    bad = '{"user_id": "u", "item_id": "i", "stars": 5, "date": ' + date + "}"
    write_layout(tmp_path, [{"item_id": "i"}], [{"user_id": "u"}], [ok, bad])
    with pytest.raises(DataFormatError, match=r"review\.json:2: field 'date': .*(finite|outside|unparsable)"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("name", ["item.json", "review.json"])
def test_non_utf8_bytes_name_file_line_and_fix(tmp_path: Path, name: str) -> None:
    ok = {"user_id": "u", "item_id": "i", "stars": 5, "date": "2020-01-01", "text": "fine"}
    write_layout(tmp_path, [{"item_id": "i"}, {"item_id": "j"}], [{"user_id": "u"}], [ok, ok])
    path = tmp_path / name
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"', b'"caf\xe9 ', 1)  # latin-1 é on line 2
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataFormatError, match=rf"{name}:2: not UTF-8 \(byte 0xe9 at column 6\); re-save"):
        load_dataset(tmp_path)


def test_duplicate_review_lines_are_kept_once_with_one_warning(tmp_path: Path) -> None:
    from starrec.data.agentsociety import DuplicateReviewsWarning

    a = {"review_id": "r1", "user_id": "u", "item_id": "i", "stars": 5, "date": "2020-01-01", "text": "ok"}
    b = {"user_id": "u", "item_id": "i", "stars": 4, "date": "2020-01-02", "text": "no id"}
    same_time = {**b, "date": "2020-01-02 00:00:00"}  # another spelling of the same date
    other = {**b, "text": "another review"}
    write_layout(tmp_path, [{"item_id": "i"}], [{"user_id": "u"}], [a, b, a, same_time, other, a])
    with pytest.warns(DuplicateReviewsWarning, match=r"review\.json: 3 duplicate review line\(s\)") as record:
        dataset = load_dataset(tmp_path)
    assert len(record) == 1
    assert [event.text for event in dataset.interactions] == ["ok", "no id", "another review"]


def test_parse_time_variants() -> None:
    path = Path("review.json")
    assert parse_time(1_000_000_000, path, 1, "t") == 1_000_000_000.0
    assert parse_time(1_000_000_000_000, path, 1, "t") == 1_000_000_000.0
    assert parse_time("1000000000", path, 1, "t") == 1_000_000_000.0
    assert parse_time("2001-09-09T01:46:40+00:00", path, 1, "t") == 1_000_000_000.0


def test_cli_fetch_is_idempotent_and_info_prints(ml100k_dir: Path) -> None:
    from typer.testing import CliRunner

    from starrec.cli import app

    runner = CliRunner()
    before = (ml100k_dir / "review.json").stat().st_mtime_ns
    fetched = runner.invoke(app, ["data", "fetch", "movielens-100k", "--dest", str(ml100k_dir)])
    assert fetched.exit_code == 0, fetched.output
    assert "'interactions': 100000" in fetched.output.replace("\n", "")
    assert (ml100k_dir / "review.json").stat().st_mtime_ns == before
    info = runner.invoke(app, ["data", "info", str(ml100k_dir)])
    assert info.exit_code == 0 and "movie" in info.output and "1997-09-20" in info.output
    unknown = runner.invoke(app, ["data", "fetch", "movielens-1m", "--dest", str(ml100k_dir)])
    assert unknown.exit_code != 0 and "unknown dataset" in unknown.output


def test_dataset_json_declares_name_and_domain(tiny_dataset: Dataset, tmp_path: Path) -> None:
    dest = write_dataset(tiny_dataset, tmp_path / "folder")
    assert (load_dataset(dest).name, load_dataset(dest).domain) == ("folder", "movie")  # inferred from genres
    (dest / "dataset.json").write_text(json.dumps({"name": "mine", "domain": "book"}))
    assert (load_dataset(dest).name, load_dataset(dest).domain) == ("mine", "book")
    assert load_dataset(dest, domain="product").domain == "product"  # the argument still wins
    (dest / "dataset.json").write_text(json.dumps({"domain": "films"}))
    with pytest.raises(DataFormatError, match=r"dataset\.json: field 'domain': unknown domain 'films'"):
        load_dataset(dest)
    (dest / "dataset.json").write_text("{oops")
    with pytest.raises(DataFormatError, match=r"dataset\.json:1: malformed JSON"):
        load_dataset(dest)
