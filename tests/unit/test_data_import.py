"""`starrec data import`: CSV/TSV, RecBole and Hugging Face data round-trip; bad input is named.

Every source file is written here in tmp_path, except the ml-100k atomic files, which come from the
cached ``recbole==1.2.1`` wheel that the MovieLens fetch already uses.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from starrec.cli import app
from starrec.config import get_settings
from starrec.data import DataFormatError, load_dataset
from starrec.data.agentsociety import DuplicateReviewsWarning
from starrec.data.importers import (
    ColumnMap,
    RecordMap,
    check_destination,
    import_csv,
    import_huggingface,
    import_recbole,
    write_imported,
)
from starrec.data.movielens import RECBOLE_PREFIX, download_recbole_wheel, parse_recbole_wheel
from starrec.data.schema import Dataset

RATINGS = (
    "userId,movieId,rating,timestamp,review\n"
    "1,1,4.0,964982703,great\n"
    '1,3,3.5,964981247,"funny, and\nlong"\n'  # a quoted field spanning two lines
    "2,1,5.0,964982224,\n"
    "2,50,,964983000,no rating\n"
)
MOVIES = (
    "movieId,title,genres,year\n"
    "1,Toy Story (1995),Adventure|Animation|Children,1995\n"
    '3,"Grumpier Old Men, The (1995)",Comedy|Romance,1995\n'
    "50,Usual Suspects,Crime|Mystery|Thriller,1995\n"
)
USERS = "userId,age,gender\n1,24,M\n2,53,F\n"
MOVIELENS_COLUMNS = ColumnMap("userId", "movieId", "timestamp", rating="rating", text="review")
MOVIELENS_ITEMS = RecordMap(title="title", categories="genres", category_sep="|")

runner = CliRunner()


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def events(dataset: Dataset) -> list[tuple]:
    return sorted((e.user_id, e.item_id, e.stars, e.timestamp, e.text) for e in dataset.interactions)


def import_ratings(tmp_path: Path, ratings: str | bytes, **kwargs) -> Dataset:
    return import_csv(write(tmp_path / "ratings.csv", ratings), MOVIELENS_COLUMNS, **kwargs).dataset


# --- round trips ---------------------------------------------------------------------------------


def test_csv_round_trip_with_items_and_users(tmp_path: Path) -> None:
    imported = import_csv(
        write(tmp_path / "ratings.csv", RATINGS), MOVIELENS_COLUMNS,
        items=write(tmp_path / "movies.csv", MOVIES), item_fields=MOVIELENS_ITEMS,
        users=write(tmp_path / "users.csv", USERS), domain="movie", name="mine",
    )
    dest = write_imported(imported, tmp_path / "out")
    loaded = load_dataset(dest)
    assert (loaded.name, loaded.domain) == ("mine", "movie")  # from dataset.json
    assert set(loaded.users) == {"1", "2"}
    assert loaded.users["2"] == {"user_id": "2", "age": "53", "gender": "F"}
    assert set(loaded.items) == {"1", "3", "50"}
    assert events(loaded) == [
        ("1", "1", 4.0, 964982703.0, "great"),
        ("1", "3", 3.5, 964981247.0, "funny, and\nlong"),
        ("2", "1", 5.0, 964982224.0, ""),
        ("2", "50", None, 964983000.0, "no rating"),
    ]
    assert loaded.item_title("3") == "Grumpier Old Men, The (1995)"
    assert loaded.item_categories("1") == ["Adventure", "Animation", "Children"]
    assert loaded.items["50"]["year"] == "1995"  # unmapped columns are kept as they are
    review_ids = {e.item_id: e.review_id for e in loaded.interactions if e.user_id == "2"}
    assert review_ids == {"1": "ratings.csv:5", "50": "ratings.csv:6"}  # the quoted newline counts
    summary = imported.summary
    assert (summary.users, summary.items, summary.interactions, summary.duplicates) == (2, 3, 4, 0)
    assert (summary.first, summary.last) == ("2000-07-30 18:20:47", "2000-07-30 18:50:00")
    assert json.loads((dest / "dataset.json").read_text())["imported"]["interactions"] == 4


@pytest.mark.parametrize(
    ("cell", "time_format"),
    [("2020-01-02 03:04:05", "auto"), ("2020-01-02T03:04:05Z", "iso"),
     ("02/01/2020 03:04:05", "%d/%m/%Y %H:%M:%S"), ("1577934245000", "unix_ms"), ("1577934245", "unix"),
     ("1577934245000", "auto")],
)
def test_tsv_time_formats(tmp_path: Path, cell: str, time_format: str) -> None:
    path = write(tmp_path / "x.tsv", f"user\titem\twhen\nu\ti\t{cell}\n")
    dataset = import_csv(path, ColumnMap("user", "item", "when", time_format=time_format)).dataset
    assert dataset.interactions[0].timestamp == 1_577_934_245.0


def test_delimiter_is_sniffed_or_given(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "user;item;when\nu;i;2020-01-01\n")
    assert import_csv(path, ColumnMap("user", "item", "when")).dataset.interactions[0].item_id == "i"
    assert import_csv(path, ColumnMap("user", "item", "when"), delimiter=";").summary.interactions == 1
    with pytest.raises(DataFormatError, match=r"no column 'user'.*the header has: user;item;when"):
        import_csv(path, ColumnMap("user", "item", "when"), delimiter=",")


def test_excel_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", b"\xef\xbb\xbfuser,item,when\r\nu,i,2020-01-01\r\n")
    assert import_csv(path, ColumnMap("user", "item", "when")).summary.interactions == 1


RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq\n"
    "u1\ti1\t4\t1000000000\tloved it\n"
    "u1\ti2\t2.5\t1000000100\t\n"
    "u2\ti1\t5\t1000000200\tok\n"
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\tprice:float\tvec:float_seq\n"
    "i1\tToy Story\t1995\tAnimation Children's Comedy\t9.5\t0.1 0.2\n"
    "i2\tHeat\t1995\tAction\t\t\n"
)
RECBOLE_USER = "user_id:token\tage:token\tgender:token\nu1\t24\tM\nu2\t53\tF\n"


def test_recbole_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    write(folder / "mine.inter", RECBOLE_INTER)
    write(folder / "mine.item", RECBOLE_ITEM)
    write(folder / "mine.user", RECBOLE_USER)
    imported = import_recbole(folder)
    loaded = load_dataset(write_imported(imported, tmp_path / "out"))
    assert (loaded.name, loaded.domain) == ("mine", "movie")  # NAME of NAME.inter; release_year says movie
    assert set(loaded.users) == {"u1", "u2"} and loaded.users["u1"]["age"] == "24"
    assert events(loaded) == [("u1", "i1", 4.0, 1e9, "loved it"), ("u1", "i2", 2.5, 1e9 + 100, ""),
                              ("u2", "i1", 5.0, 1e9 + 200, "ok")]
    assert loaded.item_title("i1") == "Toy Story"
    assert loaded.item_categories("i1") == ["Animation", "Children's", "Comedy"]
    assert loaded.items["i1"]["price"] == 9.5 and loaded.items["i1"]["vec"] == [0.1, 0.2]
    assert loaded.items["i2"]["price"] is None and loaded.items["i2"]["vec"] == []


def test_recbole_field_overrides(tmp_path: Path) -> None:
    write(tmp_path / "y.inter", "uid:token\tbusiness_id:token\tstars:float\tdate:float\nu\tb\t3\t1e9\n")
    write(tmp_path / "y.item", "business_id:token\tname:token_seq\tcategories:token\nb\tThe Cafe\tCoffee\n")
    imported = import_recbole(tmp_path / "y.inter", ColumnMap("uid", "business_id", "date", rating="stars",
                                                              time_format="unix"), domain="business")
    dataset = imported.dataset
    assert (dataset.domain, dataset.interactions[0].stars) == ("business", 3.0)
    assert dataset.item_title("b") == "The Cafe" and dataset.item_categories("b") == ["Coffee"]


def test_recbole_ml100k_matches_the_fetched_movielens(tmp_path: Path, ml100k: Dataset) -> None:
    wheel = download_recbole_wheel(get_settings().cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        for kind in ("inter", "item", "user"):
            write(tmp_path / "ml-100k" / f"ml-100k.{kind}", archive.read(f"{RECBOLE_PREFIX}.{kind}"))
    imported = import_recbole(tmp_path / "ml-100k", domain="movie")
    assert imported.summary.read_seconds >= 0  # reported; no timing threshold in tests
    loaded = load_dataset(write_imported(imported, tmp_path / "out"))
    assert loaded.stats() == ml100k.stats() == {"users": 943, "items": 1682, "interactions": 100_000}
    assert set(loaded.users) == set(ml100k.users) and set(loaded.items) == set(ml100k.items)
    key = sorted((e.user_id, e.item_id, e.stars, e.timestamp) for e in loaded.interactions)
    assert key == sorted((e.user_id, e.item_id, e.stars, e.timestamp) for e in ml100k.interactions)
    reference = parse_recbole_wheel(wheel)  # titles differ between GroupLens and RecBole (item 267)
    assert all(loaded.item_title(i) == reference.item_title(i) for i in reference.items)
    assert all([c for c in loaded.item_categories(i) if c != "unknown"] == reference.item_categories(i)
               for i in reference.items)  # the MovieLens fetch drops the placeholder genre "unknown"


def test_huggingface_round_trip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from datetime import datetime

    ratings = datasets.Dataset.from_dict({
        "user": ["u1", "u1", "u2"], "item": [10, 11, 10], "stars": [4.5, None, 3.0],
        "when": [datetime(2020, 1, 2, 3, 4, 5), datetime(2020, 1, 3), datetime(2021, 1, 1)],
        "text": ["good", None, "meh"],
    })
    datasets.DatasetDict({"train": ratings, "test": ratings.select([0])}).save_to_disk(tmp_path / "hf")
    items = datasets.Dataset.from_dict({"item": [10, 11], "name": ["Kettle", "Mug"],
                                        "tags": [["Kitchen", "Home"], []], "price": [9.5, float("nan")]})
    items.save_to_disk(tmp_path / "items")
    imported = import_huggingface(tmp_path / "hf", ColumnMap("user", "item", "when", "stars", "text"),
                                  split="train", items=tmp_path / "items",
                                  item_fields=RecordMap(title="name", categories="tags"), domain="product")
    loaded = load_dataset(write_imported(imported, tmp_path / "out"))
    assert loaded.domain == "product" and set(loaded.items) == {"10", "11"} and set(loaded.users) == set()
    assert events(loaded) == [("u1", "10", 4.5, 1_577_934_245.0, "good"),
                              ("u1", "11", None, 1_578_009_600.0, ""),
                              ("u2", "10", 3.0, 1_609_459_200.0, "meh")]
    assert loaded.item_title("10") == "Kettle" and loaded.item_categories("10") == ["Kitchen", "Home"]
    assert loaded.items["11"]["price"] is None  # NaN metadata becomes null, JSON has no NaN
    assert imported.summary.files["interactions"].endswith("hf[train]")


# --- malformed input -----------------------------------------------------------------------------


def test_missing_mapped_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    with pytest.raises(DataFormatError) as info:
        import_csv(path, ColumnMap("user_id", "movieId", "timestamp"))
    assert str(info.value) == (f"{path}:1: field 'user_id': no column 'user_id' (--user-col); the header "
                               "has: userId, movieId, rating, timestamp, review; pass the right name with "
                               "--user-col")
    movies = write(tmp_path / "movies.csv", MOVIES)
    with pytest.raises(DataFormatError, match=r"movies\.csv:1: field 'name': no column 'name' \(--title"):
        import_csv(path, MOVIELENS_COLUMNS, items=movies, item_fields=RecordMap(title="name"))


@pytest.mark.parametrize(("row", "field", "what"), [(",1,4,964982703,", "userId", "user id"),
                                                    ("1, ,4,964982703,", "movieId", "item id")])
def test_empty_id_names_line_and_field(tmp_path: Path, row: str, field: str, what: str) -> None:
    expected = rf"ratings\.csv:3: field '{field}': empty {what}; every row"
    with pytest.raises(DataFormatError, match=expected) as info:
        import_ratings(tmp_path, "userId,movieId,rating,timestamp,review\n1,1,4,964982703,\n" + row + "\n")
    assert (info.value.line, info.value.field) == (3, field)


@pytest.mark.parametrize(
    ("cell", "time_format", "message"),
    [("yesterday", "auto", "unparsable date 'yesterday'.*or name the format with --time-format"),
     ("2020-13-45", "%Y-%m-%d", "does not match '%Y-%m-%d'; fix the value or --time-format"),
     ("soon", "unix", "'soon' is not a number"),
     ("2020/01/02", "iso", "does not match 'an ISO 8601 date")],
)
def test_unparseable_time(tmp_path: Path, cell: str, time_format: str, message: str) -> None:
    good = {"auto": "2020-01-02", "iso": "2020-01-02", "unix": "1577934245"}.get(time_format, "2020-01-02")
    path = write(tmp_path / "x.csv", f"user,item,when\nu,i,{good}\nu,j,{cell}\n")
    with pytest.raises(DataFormatError, match=r"x\.csv:3: field 'when': .*" + message):
        import_csv(path, ColumnMap("user", "item", "when", time_format=time_format))


def test_unparseable_rating_says_how_to_fix(tmp_path: Path) -> None:
    expected = r"ratings\.csv:2: field 'rating': rating 'five' is not a number; fix the value, leave the cell"
    with pytest.raises(DataFormatError, match=expected):
        import_ratings(tmp_path, "userId,movieId,rating,timestamp,review\n1,1,five,964982703,\n")


@pytest.mark.parametrize(("rating", "when", "field"), [
    ("nan", "964982703", "rating"), ("inf", "964982703", "rating"), ("4", "nan", "timestamp"),
    ("4", "inf", "timestamp"), ("4", "1e300", "timestamp"),
])
def test_non_finite_values(tmp_path: Path, rating: str, when: str, field: str) -> None:
    path = write(tmp_path / "ratings.csv", f"userId,movieId,rating,timestamp,review\n1,1,{rating},{when},\n")
    columns = ColumnMap("userId", "movieId", "timestamp", rating="rating", time_format="unix")
    expected = r"ratings\.csv:2: .*(not finite|not a finite date|outside years)"
    with pytest.raises(DataFormatError, match=expected) as info:
        import_csv(path, columns)
    assert info.value.field == field


def test_non_finite_huggingface_rating(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"u": ["a", "b"], "i": ["x", "y"], "r": [1.0, math.nan],
                                "t": [1e9, 1e9]}).save_to_disk(tmp_path / "hf")
    with pytest.raises(DataFormatError, match=r"hf:2: field 'r': rating nan is not finite"):
        import_huggingface(tmp_path / "hf", ColumnMap("u", "i", "t", rating="r"))


def test_undecodable_byte_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    data = b"userId,movieId,rating,timestamp,review\n1,1,4,964982703,ok\n1,2,4,964982703,caf\xe9\n"
    with pytest.raises(DataFormatError) as info:
        import_ratings(tmp_path, data)
    message = str(info.value)
    assert "\n" not in message and info.value.line == 3
    assert message.startswith(f"{tmp_path / 'ratings.csv'}:3: not UTF-8 (byte 0xe9 at column 20); re-save")


@pytest.mark.parametrize(
    ("header", "message"),
    [("user_id:token\titem_id\ttimestamp:float", "header field 'item_id' has no ':type' suffix"),
     ("user_id:token\titem_id:token\ttimestamp:double",
      "header field 'timestamp:double' has unknown type 'double'")],
)
def test_recbole_header_types(tmp_path: Path, header: str, message: str) -> None:
    path = write(tmp_path / "x.inter", header + "\nu\ti\t1\n")
    with pytest.raises(DataFormatError, match=r"x\.inter:1: field .*" + message):
        import_recbole(path)


def test_recbole_float_field_that_is_not_a_number(tmp_path: Path) -> None:
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n")
    write(tmp_path / "x.item", "item_id:token\tprice:float\ni\tcheap\n")
    expected = r"x\.item:2: field 'price': 'cheap' is not a number \(the header types the field float\)"
    with pytest.raises(DataFormatError, match=expected):
        import_recbole(tmp_path)


def test_split_not_in_the_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ratings = datasets.Dataset.from_dict({"user_id": ["u"], "item_id": ["i"], "timestamp": [1e9]})
    datasets.DatasetDict({"train": ratings, "test": ratings}).save_to_disk(tmp_path / "hf")
    with pytest.raises(DataFormatError, match=r"has no split 'valid'; choose one with --split: train, test"):
        import_huggingface(tmp_path / "hf", ColumnMap(), split="valid")
    with pytest.raises(DataFormatError, match=r"holds several splits; choose one with --split: train, test"):
        import_huggingface(tmp_path / "hf", ColumnMap())


def test_not_a_huggingface_dataset(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataFormatError, match=r"folder: not a Hugging Face dataset"):
        import_huggingface(tmp_path / "folder", ColumnMap())


def test_missing_datasets_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    (tmp_path / "hf").mkdir()
    with pytest.raises(ValueError, match=r"needs the `datasets` package.*pip install 'starrec\[train\]'"):
        import_huggingface(tmp_path / "hf", ColumnMap())


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty file; expected a header line"),
    ("\n\n", "empty file; expected a header line"),
    ("userId,movieId,rating,timestamp,review\n", "no interactions: no rows"),
])
def test_empty_file(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DataFormatError, match=r"ratings\.csv: " + message):
        import_ratings(tmp_path, content)


def test_empty_recbole_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"x\.inter: empty file"):
        import_recbole(write(tmp_path / "x.inter", ""))


def test_wrong_field_count_and_duplicate_item_rows(tmp_path: Path) -> None:
    short_row = "userId,movieId,rating,timestamp,review\n1,1,4,964982703,\n1,2,4,964982703\n"
    with pytest.raises(DataFormatError, match=r"ratings\.csv:3: 4 fields where the header has 5; quote"):
        import_ratings(tmp_path, short_row)
    movies = write(tmp_path / "movies.csv", MOVIES + "3,Again,Drama,1996\n")
    expected = r"movies\.csv:5: field 'movieId': duplicate item id '3' \(first on line 3\)"
    with pytest.raises(DataFormatError, match=expected):
        import_csv(write(tmp_path / "r.csv", RATINGS), MOVIELENS_COLUMNS, items=movies,
                   item_fields=MOVIELENS_ITEMS)


def test_duplicate_lines_are_kept_once_with_one_warning(tmp_path: Path) -> None:
    line = "1,1,4,964982703,same\n"
    other_rating = "1,1,5,964982703,same\n"  # not a repeat: the rating differs
    content = "userId,movieId,rating,timestamp,review\n" + line * 3 + other_rating
    with pytest.warns(DuplicateReviewsWarning, match=r"ratings\.csv: 2 duplicate interaction line") as record:
        dataset = import_ratings(tmp_path, content)
    assert len(record) == 1
    assert [event.stars for event in dataset.interactions] == [4.0, 5.0]


def test_skip_invalid_drops_and_counts(tmp_path: Path) -> None:
    content = "userId,movieId,rating,timestamp,review\n1,1,4,964982703,\n,2,4,964982703,\n1,3,x,964982703,\n"
    imported = import_csv(write(tmp_path / "ratings.csv", content), MOVIELENS_COLUMNS, skip_invalid=True)
    assert (imported.summary.interactions, imported.summary.invalid) == (1, 2)
    assert imported.summary.invalid_examples[0].startswith(f"{tmp_path / 'ratings.csv'}:3: field 'userId'")


# --- writing -------------------------------------------------------------------------------------


def test_nothing_already_written_is_lost(tmp_path: Path) -> None:
    dest = write_imported(import_ratings_full(tmp_path), tmp_path / "out")
    before = {path.name: path.read_bytes() for path in dest.iterdir()}
    with pytest.raises(FileExistsError, match="exists and is not empty; choose a new folder, or pass --over"):
        write_imported(import_ratings_full(tmp_path), dest)
    (tmp_path / "notes").mkdir()
    write(tmp_path / "notes" / "todo.txt", "keep me")
    with pytest.raises(FileExistsError, match=r"holds files that are not part of a dataset \(todo\.txt\)"):
        check_destination(tmp_path / "notes", overwrite=True)
    assert {path.name: path.read_bytes() for path in dest.iterdir()} == before
    smaller = import_csv(write(tmp_path / "one.csv", "userId,movieId,timestamp\n9,9,1\n"),
                         ColumnMap("userId", "movieId", "timestamp"))
    write_imported(smaller, dest, overwrite=True)
    assert load_dataset(dest).stats() == {"users": 0, "items": 0, "interactions": 1}
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # no leftovers


def import_ratings_full(tmp_path: Path):
    return import_csv(write(tmp_path / "ratings.csv", RATINGS), MOVIELENS_COLUMNS)


# --- the command ---------------------------------------------------------------------------------


def test_cli_csv_import_prints_and_returns_the_summary(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", RATINGS + "2,50,,964983000,no rating\n")
    write(tmp_path / "movies.csv", MOVIES)
    command = ["data", "import", "csv", str(tmp_path / "ratings.csv"), "--dest", str(tmp_path / "ml"),
               "--user-col", "userId", "--item-col", "movieId", "--rating-col", "rating",
               "--text-col", "review",
               "--items", str(tmp_path / "movies.csv"), "--title-col", "title", "--category-col", "genres",
               "--category-sep", "|", "--domain", "movie"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI turns the duplicate warning into one stderr line
        result = runner.invoke(app, [*command, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    counts = (summary["users"], summary["items"], summary["interactions"], summary["duplicates"])
    assert counts == (2, 3, 4, 1)
    assert summary["name"] == "ml" and summary["dest"] == str(tmp_path / "ml")
    assert result.stderr.strip() == (f"warning: {tmp_path / 'ratings.csv'}: 1 duplicate interaction line(s) "
                                     "(same user, item, time, rating and text); kept the first of each")
    table = runner.invoke(app, [*command[:5], str(tmp_path / "ml2"), *command[6:]])
    assert table.exit_code == 0 and "interactions" in table.stdout and "2000-07-30 18:20:47" in table.stdout
    info = runner.invoke(app, ["data", "info", str(tmp_path / "ml")])
    assert info.exit_code == 0 and "movie" in info.stdout

    again = runner.invoke(app, command)
    assert again.exit_code == 1 and again.stderr.startswith("error: ") and "--overwrite" in again.stderr
    bad = runner.invoke(app, [*command[:5], str(tmp_path / "ml3"), "--user-col", "user"])
    assert bad.exit_code == 1
    assert bad.stderr.strip().endswith("no column 'user' (--user-col); the header has: userId, movieId, "
                                       "rating, timestamp, review; pass the right name with --user-col")
    assert not (tmp_path / "ml3").exists()


def test_cli_recbole_import(tmp_path: Path) -> None:
    write(tmp_path / "mine" / "mine.inter", RECBOLE_INTER)
    result = runner.invoke(app, ["data", "import", "recbole", str(tmp_path / "mine"),
                                 "--dest", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["interactions"] == 3 and load_dataset(tmp_path / "o").name == "mine"
