"""longrec_core.readers on its own: each format on a tiny file, format detection, id and time
conversion, the batched reader of a sharded prep, and each kind of bad input as a ValueError
with one clear sentence. (tests/test_prep.py runs the same readers through the whole script.)"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from longrec_core import readers


def rows(path: Path, fmt: str, **options: object) -> list[tuple]:
    """(user, item, ts[, type]) rows of `path` as its reader returns them (raw values)."""
    lf, _ = readers.scan_log(path, fmt, **options)
    df = lf.collect()
    cols = ["user", "item", "ts"] + (["type"] if "type" in df.columns else [])
    return df.select(cols).rows()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode(), mtime=0) if name.endswith(".gz") else text.encode())
    return path


# ---------------------------------------------------------------- each format


def test_retailrocket(tmp_path):
    f = write(
        tmp_path,
        "events.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n1433221955914,257597,transaction,248676,4000\n",
    )
    lf, info = readers.scan_log(f, "retailrocket")
    assert lf.collect().rows() == [
        (257597, 355908, 1433221332117, "view"),
        (257597, 248676, 1433221955914, "transaction"),
    ]
    assert info["time_unit"] == "ms" and info["type_order"] == readers.RETAILROCKET_TYPES
    assert info["columns"] == {"user": "visitorid", "item": "itemid", "time": "timestamp", "type": "event"}


def test_movielens_dat_and_csv(tmp_path):
    dat = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    assert rows(dat, "ml-dat") == [(1, 1193, 978300760), (2, 661, 978302109)]
    csv = write(tmp_path, "ratings.csv.gz", "userId,movieId,rating,timestamp\n1,3,4.0,964981247\n")
    assert rows(csv, "ml-csv") == [(1, 3, 964981247)]


def test_recbole_inter(tmp_path):
    f = write(
        tmp_path, "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"
    )
    lf, info = readers.scan_log(f, "inter")
    assert lf.collect().rows() == [(196, 242, 881250949.0)]
    assert info["columns"]["user"] == "user_id:token" and info["separator"] == "\t"


def test_pairs_untimed_and_timed(tmp_path):
    f = write(tmp_path, "pairs.txt", "1 10\n1 11\n2 11\n")
    assert rows(f, "pairs") == [(1, 10, 0), (1, 11, 1), (2, 11, 2)]  # ts = line number
    g = write(tmp_path, "timed.txt", "1\t10\t100\n2\t11\t50\n")
    lf, info = readers.scan_log(g, "pairs", time_unit="ms")
    assert lf.collect()["ts"].to_list() == [100, 50] and info["timed"] and info["time_unit"] == "ms"


def test_seqs_and_items(tmp_path):
    f = write(tmp_path, "seqs.txt", "1 5 6\n2 6\n\n")
    assert rows(f, "seqs") == [("1", "5", 0), ("1", "6", 1), ("2", "6", 2)]
    assert rows(f, "items") == [(1, "1", 0), (1, "5", 1), (1, "6", 2), (2, "2", 3), (2, "6", 4)]  # user = line number


def test_csv_with_named_columns_and_types(tmp_path):
    f = write(tmp_path, "log.tsv", "who\twhat\twhen\tkind\nbob\tsku-2\t2024-01-01T10:00:00\tclick\n")
    lf, info = readers.scan_log(f, "csv", user_col="who", item_col="what", time_col="when", type_col="kind")
    assert lf.collect().rows() == [("bob", "sku-2", "2024-01-01T10:00:00", "click")]
    assert info["separator"] == "\t" and info["columns"]["type"] == "kind"
    semi = write(tmp_path, "semi.csv", "user_id;item_id;timestamp\n1;2;3\n")
    assert rows(semi, "csv", separator=";") == [(1, 2, 3)]


def test_parquet_guessed_columns(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"uid": [7], "sku": ["a"], "event_time": [dt.datetime(2020, 1, 1)], "x": [0]}).write_parquet(f)
    lf, info = readers.scan_log(f, "parquet")
    assert lf.collect().rows() == [(7, "a", dt.datetime(2020, 1, 1))]
    assert info["columns"] == {"user": "uid", "item": "sku", "time": "event_time", "type": None}
    assert "separator" not in info


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "name, text, fmt",
    [
        ("events.csv", "timestamp,visitorid,event,itemid,transactionid\n1,2,view,3,\n", "retailrocket"),
        ("ratings.csv.gz", "userId,movieId,rating,timestamp\n1,1,4.0,1\n", "ml-csv"),
        ("ratings.dat", "1::1193::5::978300760\n", "ml-dat"),
        ("log.txt", "user_id:token\titem_id:token\n1\t2\n", "inter"),
        ("ml.inter", "anything\n", "inter"),
        ("log.tsv", "who\twhat\twhen\n", "csv"),
        ("log.csv", "a,b,c\n1,2,3\n", "csv"),
        ("ml-1m.txt", "1 10\n1 11\n2 3\n", "pairs"),
        ("timed.txt", "1\t10\t100\n2\t11\t50\n", "seqs"),  # users 1, 2 with two items each: pass --format pairs
        ("Beauty.txt", "1 5 6 7\n2 6 7 8 9\n3 9\n", "seqs"),
        ("sessions.txt", "1 2 1 1\n3 4 3\n\n5 6 5\n", "items"),
    ],
)
def test_detect_format(tmp_path, name, text, fmt):
    assert readers.detect_format(write(tmp_path, name, text)) == fmt


def test_detect_parquet_by_name_only(tmp_path):
    assert readers.detect_format(tmp_path / "x.parquet") == "parquet"  # not opened
    assert readers.detect_format(tmp_path / "x.pq.zst") == "parquet"


def test_strip_compression():
    assert readers.strip_compression("ratings.csv.gz") == "ratings.csv"
    assert readers.strip_compression("log.parquet.ZST") == "log.parquet"
    assert readers.strip_compression("plain.csv") == "plain.csv"


# ---------------------------------------------------------------- ids and times


def test_to_int_ids():
    what = "the user column of x"
    assert readers.to_int_ids(pl.Series([3, 1], dtype=pl.UInt16), what).dtype == pl.UInt16  # integers stay
    assert readers.to_int_ids(pl.Series(["3", "10"]), what).to_list() == [3, 10]  # all-integer text -> Int64
    assert readers.to_int_ids(pl.Series(["u3", "10"]), what).to_list() == ["u3", "10"]  # other text stays
    assert readers.to_int_ids(pl.Series([3.0, 10.0]), what).to_list() == [3, 10]
    with pytest.raises(ValueError, match="the user column of x has fractional ids"):
        readers.to_int_ids(pl.Series([3.5]), what)
    with pytest.raises(ValueError, match="has a value outside the int64 range: inf"):
        readers.to_int_ids(pl.Series([1.0, float("inf")]), what)
    with pytest.raises(ValueError, match=r"has type List\(Int64\); ids must be integers or text"):
        readers.to_int_ids(pl.Series([[1], [2]]), what)


def test_to_seconds():
    what = "the time column of x"
    assert readers.to_seconds(pl.Series([1_500, -1]), "ms", what).to_list() == [1, -1]  # floor
    assert readers.to_seconds(pl.Series([2_999_999]), "us", what).to_list() == [2]
    assert readers.to_seconds(pl.Series([1.9, -0.5]), "s", what).to_list() == [1, -1]
    assert readers.to_seconds(pl.Series(["2024-01-01T09:00:00"]), "s", what).to_list() == [1704099600]
    assert readers.to_seconds(pl.Series(["2024-01-01T09:00:00+01:00"]), "s", what).to_list() == [1704096000]
    assert readers.to_seconds(pl.Series([dt.date(1970, 1, 2)]), "s", what).to_list() == [86400]
    assert readers.to_seconds(pl.Series([dt.datetime(1970, 1, 1, 0, 0, 5, 900_000)]), "s", what).to_list() == [5]
    with pytest.raises(ValueError, match="the time column of x is neither numbers nor dates I can parse"):
        readers.to_seconds(pl.Series(["yesterday"]), "s", what)
    with pytest.raises(ValueError, match="outside the int64 range: 1e\\+300"):
        readers.to_seconds(pl.Series([1e300]), "s", what)
    with pytest.raises(ValueError, match="outside the int64 range: 9223372036854775813"):
        readers.to_seconds(pl.Series([2**63 + 5], dtype=pl.UInt64), "s", what)
    with pytest.raises(ValueError, match="has type Boolean, not numbers or dates"):
        readers.to_seconds(pl.Series([True]), "s", what)


def test_column_names_the_file_and_column(tmp_path):
    info = {"columns": {"time": "when"}}
    assert readers.column(info, "time", tmp_path / "log.csv") == f"the time column 'when' of {tmp_path / 'log.csv'}"
    assert readers.column({}, "user", Path("x.txt")) == "the user column of x.txt"


def test_code_types_grow_in_order_of_appearance():
    names: list[str] = ["view"]
    codes = readers.code_types(pl.Series(["buy", None, "view", "buy"]), names)
    assert names == ["view", "buy", ""] and codes.tolist() == [2, 3, 1, 2] and codes.dtype == np.int8
    with pytest.raises(ValueError, match="the type column has 128 distinct values; at most 127 are supported"):
        readers.code_types(pl.Series([f"t{k}" for k in range(128)]), [])


def test_complete_drops_nulls_and_nans():
    df = pl.DataFrame({"user": [1, None, 3, 4], "item": [1.0, 2.0, float("nan"), 4.0], "ts": [1, 2, 3, None]})
    assert df.filter(readers.complete(df))["user"].to_list() == [1]


def test_event_batches_count_and_code(tmp_path):
    f = write(tmp_path, "log.csv", "user_id,item_id,timestamp,kind\n1,10,1000,a\n2,,2000,b\n3,12,3000,b\n4,13,4000,c\n")
    lf, info = readers.scan_log(f, "csv", type_col="kind", time_unit="ms")
    names: list[str] = []
    counts: dict[str, int] = {}
    batches = list(readers.event_batches(lf, info, f, "csv", 2, names, counts))
    user, item, ts, types = (np.concatenate([b[k] for b in batches]) for k in range(4))
    assert user.tolist() == [1, 3, 4] and item.tolist() == [10, 12, 13] and ts.tolist() == [1, 3, 4]
    assert names == ["a", "b", "c"] and types.tolist() == [1, 2, 3]
    assert counts == {"rows_read": 4, "dropped_missing": 1, "kept": 3}


def test_read_log_codes_ids_times_and_types(tmp_path):
    f = write(
        tmp_path,
        "log.csv",
        "user_id,item_id,timestamp,event\nb,20,3000,buy\n,21,1000,view\na,10,2500,zoom\nb,10,1000,view\n",
    )
    lf, info = readers.scan_log(f, "csv", type_col="event", time_unit="ms")
    info["type_order"] = ["view", "buy"]  # a format's own order comes first, the rest sorted
    log, counts = readers.read_log(lf, info, f, "csv")
    assert counts == {"rows_read": 4, "dropped_missing": 1}
    assert log.user_ids.to_list() == ["a", "b"] and log.user.tolist() == [1, 0, 1]  # codes in raw-id order
    assert log.item_ids.to_list() == [10, 20] and log.item.tolist() == [1, 0, 0]
    assert log.ts.tolist() == [3, 2, 1]
    assert log.type_names == ["view", "buy", "zoom"] and log.types.tolist() == [2, 3, 1]


def test_read_log_refusals(tmp_path):
    header = write(tmp_path, "header.csv", "user_id,item_id,timestamp\n,1,2\n")
    with pytest.raises(ValueError, match="has no rows with a user, an item and a time"):
        readers.read_log(*readers.scan_log(header, "csv"), header, "csv")
    back = write(tmp_path, "back.txt", "1 10 100\n2 10 50\n1 11 90\n")
    with pytest.raises(
        ValueError, match=r"time goes backwards for user 1 at line 3 of .*back\.txt; in the pairs format"
    ):
        readers.read_log(*readers.scan_log(back, "pairs"), back, "pairs")
    text = "user_id,item_id,timestamp\n" + "".join(f"{u},{u + 1},{u}\n" for u in range(20_000))
    whole = gzip.compress(text.encode(), mtime=0)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])  # the header reads fine; the body does not
    with pytest.raises(ValueError, match=r"cannot read .*cut\.csv\.gz as csv"):
        readers.read_log(*readers.scan_log(cut, "csv"), cut, "csv")
    words = write(tmp_path, "words.csv", "user_id,item_id,timestamp\n1,1,yesterday\n")
    with pytest.raises(ValueError, match=r"the time column 'timestamp' of .*words\.csv is neither numbers nor dates"):
        readers.read_log(*readers.scan_log(words, "csv"), words, "csv")


# ---------------------------------------------------------------- bad input


def test_bad_files(tmp_path):
    cases = [  # (file name, contents, format or None to detect, options, the message)
        ("empty.txt", "", None, {}, "is empty"),
        ("log.csv", "user_id,item_id,timestamp\n1,2,3\n", "csv", {"user_col": "who"}, "has no column 'who'"),
        ("abc.csv", "a,b,c\n1,2,3\n", "csv", {}, "has no user column I recognize: pass --user-col"),
        ("comma.csv", "user_id,item_id,timestamp\n1,2,3\n", "inter", {}, "has no '\\t' between its column names"),
        ("ragged.txt", "1 2 3 4\n", "pairs", {}, "has 4 columns; the pairs format is"),
        ("bad.dat", "1::2\n", "ml-dat", {}, "is not a MovieLens ratings.dat file"),
    ]
    for name, text, fmt, options, match in cases:
        f = write(tmp_path, name, text)
        with pytest.raises(ValueError, match=re.escape(match)):
            readers.scan_log(f, fmt or readers.detect_format(f), **options)


def test_bad_options(tmp_path):
    f = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(ValueError, match="--separator must be one character, got '::'"):
        readers.scan_log(f, "csv", separator="::")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        readers.scan_log(f, "xml")
    with pytest.raises(ValueError, match="unknown time unit 'h'"):
        readers.scan_log(f, "csv", time_unit="h")


def test_binary_and_misnamed_and_truncated_files(tmp_path):
    binary = tmp_path / "junk.bin"
    binary.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(ValueError, match="its first lines are not text"):
        readers.detect_format(binary)
    plain = write(tmp_path, "plain.csv", "user_id,item_id,timestamp\n1,2,3\n").rename(tmp_path / "plain.csv.gz")
    with pytest.raises(ValueError, match=r"plain.csv.gz is named .gz but is not a .gz file"):
        readers.check_compression(plain)
    readers.check_compression(write(tmp_path, "real.csv.gz", "a\n"))  # a real .gz passes
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(b"user_id,item_id,timestamp\n1,2,3\n" * 100, mtime=0)[:20])
    with pytest.raises(ValueError, match=r"cannot read .*cut\.csv\.gz"):
        readers.detect_format(cut)


def test_event_batches_refuse_text_ids(tmp_path):
    f = write(tmp_path, "text.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    lf, info = readers.scan_log(f, "csv")
    with pytest.raises(ValueError, match="with --shards, user and item ids must be integers"):
        list(readers.event_batches(lf, info, f, "csv", 10, [], {}))
