"""scripts/prep.py end to end: every input format on a tiny file in its exact format (plain,
.gz, .zst), every kind of bad input (exit 2, one sentence, nothing left behind), --force,
stdin/stdout, and the real data sets in ../shared/data when present.

Most runs are in-process (runpy, the same code path as `python scripts/prep.py`, without a
fresh interpreter each time); a few go through a real subprocess."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import resource
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from longrec_core import datadir, prepare

ROOT = Path(__file__).parents[1]
PREP = ROOT / "scripts" / "prep.py"
SHARED = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture()
def prep(tmp_path, monkeypatch, capsys):
    """prep(*args) -> (exit code, stdout, stderr), run in-process in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["prep.py", *map(str, args)])
        code = 0
        try:
            runpy.run_path(str(PREP), run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def histories(path: Path) -> dict[object, list[tuple]]:
    """{raw user: [(raw item, ts[, type name]), ...]} of a data dir, in stored order."""
    d = datadir.load_data_dir(path, verify=True)
    item_ids = pl.read_parquet(path / "items.parquet")["id"].to_list()
    user_ids = pl.read_parquet(path / "users.parquet")["id"].to_list()
    names = d.manifest["types"]
    out = {}
    for u, raw in enumerate(user_ids):
        a, b = d.offsets[u], d.offsets[u + 1]
        rows = []
        for i in range(a, b):
            row = (item_ids[d.items[i] - 1], int(d.ts[i]))
            if d.types is not None:
                row += (names[d.types[i] - 1],)
            rows.append(row)
        out[raw] = rows
    return out


def ok(result: tuple[int, str, str]) -> Path:
    code, out, err = result
    assert code == 0, err
    assert len(out.splitlines()) == 1  # stdout: the data dir path, nothing else
    return Path(out.strip())


def write_zst(path: Path, text: str) -> None:
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-o", str(path)], input=text.encode(), check=True)
    else:
        pa = pytest.importorskip("pyarrow")
        with pa.CompressedOutputStream(str(path), "zstd") as f:
            f.write(text.encode())


# ---------------------------------------------------------------- formats

RETAILROCKET = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,111016,addtocart,318965,
1433221955914,257597,transaction,248676,4000
1433221999000,257597,addtocart,355908,
1433222000000,992329,view,,
"""


@pytest.mark.parametrize("compress", ["", ".gz"])
def test_retailrocket(prep, tmp_path, compress):
    f = tmp_path / f"events.csv{compress}"
    f.write_bytes(gzip.compress(RETAILROCKET.encode()) if compress else RETAILROCKET.encode())
    out = ok(prep(f))
    assert out == Path("data/events")
    assert histories(tmp_path / out) == {
        111016: [(318965, 1433221999, "addtocart")],
        257597: [(355908, 1433221332, "view"), (248676, 1433221955, "transaction"), (355908, 1433221999, "addtocart")],
        992329: [(248676, 1433224214, "view")],
    }
    m = datadir.load_data_dir(tmp_path / out).manifest
    assert m["types"] == ["view", "addtocart", "transaction"]  # codes 1, 2, 3
    assert m["counts"]["dropped_missing"] == 1 and m["counts"]["rows_read"] == 6
    assert m["source"]["format"] == "retailrocket" and len(m["source"]["sha256"]) == 64


def test_movielens_dat(prep, tmp_path):
    f = tmp_path / "ratings.dat"
    f.write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n1::914::3::978301968\n")
    out = ok(prep(f))
    assert histories(tmp_path / out) == {
        1: [(1193, 978300760), (914, 978301968), (661, 978302109)],
        2: [(1193, 978298413)],
    }
    assert datadir.load_data_dir(tmp_path / out).manifest["source"]["format"] == "ml-dat"


def test_movielens_csv_zst(prep, tmp_path):
    f = tmp_path / "ratings.csv.zst"
    write_zst(f, "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,3,5.0,964982224\n")
    out = ok(prep(f))
    assert out == Path("data/ratings")
    assert histories(tmp_path / out) == {1: [(3, 964981247), (1, 964982703)], 2: [(3, 964982224)]}


def test_recbole_inter(prep, tmp_path):
    f = tmp_path / "ml-100k.inter.gz"
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t881250948.0\n"
    )
    f.write_bytes(gzip.compress(text.encode()))
    out = ok(prep(f))
    assert out == Path("data/ml-100k")
    assert histories(tmp_path / out) == {186: [(302, 891717742)], 196: [(302, 881250948), (242, 881250949)]}


def test_pairs(prep, tmp_path):
    f = tmp_path / "ml-1m.txt"
    f.write_text("1 10\n1 11\n1 10\n2 11\n2 12\n3 12\n")
    out = ok(prep(f))
    assert histories(tmp_path / out) == {1: [(10, 0), (11, 1), (10, 2)], 2: [(11, 3), (12, 4)], 3: [(12, 5)]}
    assert datadir.load_data_dir(tmp_path / out).manifest["source"]["format"] == "pairs"


def test_pairs_with_times(prep, tmp_path):
    f = tmp_path / "timed.txt"
    f.write_text("1\t10\t100\n2\t11\t50\n1\t11\t100\n1\t12\t130\n")
    out = ok(prep(f, "--format", "pairs"))
    assert histories(tmp_path / out) == {1: [(10, 100), (11, 100), (12, 130)], 2: [(11, 50)]}


def test_seqs_and_items(prep, tmp_path):
    f = tmp_path / "Beauty.txt"
    f.write_text("1 5 6 7\n2 6 7 8 9\n3 9\n")
    out = ok(prep(f))  # detected: the first column counts 1, 2, 3
    assert histories(tmp_path / out) == {1: [(5, 0), (6, 1), (7, 2)], 2: [(6, 3), (7, 4), (8, 5), (9, 6)], 3: [(9, 7)]}
    assert datadir.load_data_dir(tmp_path / out).manifest["source"]["format"] == "seqs"

    g = tmp_path / "sessions.txt.gz"
    g.write_bytes(gzip.compress(b"1 2 1 1\n3 4 3\n\n5 6 5\n"))
    out = ok(prep(g))  # detected: 1, 3, 5 are not user ids
    assert datadir.load_data_dir(tmp_path / out).manifest["source"]["format"] == "items"
    assert histories(tmp_path / out) == {
        1: [(1, 0), (2, 1), (1, 2), (1, 3)],
        2: [(3, 4), (4, 5), (3, 6)],
        4: [(5, 7), (6, 8), (5, 9)],
    }
    out = ok(prep(f, "--format", "items", "--out", "data/as-items"))  # forced: the first column is an item
    assert histories(tmp_path / out)[1] == [(1, 0), (5, 1), (6, 2), (7, 3)]


def test_a_user_on_several_lines_of_a_seqs_file_is_joined_with_a_warning(prep, tmp_path):
    """a repeated user in a `seqs` file was joined without a word."""
    f = tmp_path / "repeats.txt"
    f.write_text("1 5 6 7\n2 6 7 8 9\n1 9 3\n")
    code, out, err = prep(f, "--format", "seqs")
    assert code == 0, err
    assert histories(tmp_path / out.strip())[1] == [(5, 0), (6, 1), (7, 2), (9, 7), (3, 8)]  # in file order
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "user 1 on 2" in warnings[0] and "--format items" in warnings[0], err
    f.write_text("1 5 6 7\n2 6 7 8 9\n")
    assert "more than one line" not in prep(f, "--format", "seqs", "--out", "data/once")[2]


def test_ids_beyond_64_bits_are_read_as_text(prep, tmp_path):
    """a CSV whose ids do not fit 64 bits crashed with Polars' InvalidOperationError
    (NumPy has no 128-bit integers); such ids are read as text."""
    f = tmp_path / "big.csv"
    f.write_text("user,item,ts\n18446744073709551616,1,1\n18446744073709551616,2,2\n7,99999999999999999999999,3\n")
    out = ok(prep(f))
    assert histories(tmp_path / out) == {
        "18446744073709551616": [("1", 1), ("2", 2)],  # the item column too: one of its ids is wide
        "7": [("99999999999999999999999", 3)],
    }


def test_generic_csv_with_strings_dates_and_types(prep, tmp_path):
    f = tmp_path / "log.tsv"
    f.write_text(
        "who\twhat\twhen\tkind\n"
        "bob\tsku-2\t2024-01-01T10:00:00\tclick\n"
        "amy\tsku-1\t2024-01-01T09:00:00\tbuy\n"
        "bob\tsku-1\t2024-01-01T09:30:00\tclick\n"
        "amy\t\t2024-01-02T00:00:00\tclick\n"
    )
    out = ok(prep(f, "--user-col", "who", "--item-col", "what", "--time-col", "when", "--type-col", "kind"))
    t9 = 1704099600  # 2024-01-01T09:00:00Z
    assert histories(tmp_path / out) == {
        "amy": [("sku-1", t9, "buy")],
        "bob": [("sku-1", t9 + 1800, "click"), ("sku-2", t9 + 3600, "click")],
    }
    assert datadir.load_data_dir(tmp_path / out).manifest["counts"]["dropped_missing"] == 1


def test_generic_parquet_guessed_columns_and_time_unit(prep, tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"user": [7, 7, 3], "item": [1, 2, 1], "ts": [5_000, 1_500, 2_999], "x": [0, 0, 0]}).write_parquet(f)
    out = ok(prep(f, "--time-unit", "ms"))
    assert histories(tmp_path / out) == {3: [(1, 2)], 7: [(2, 1), (1, 5)]}
    g = tmp_path / "dates.parquet"
    pl.DataFrame(
        {"uid": [1, 1], "sku": ["a", "b"], "when": [dt.datetime(2020, 1, 1, 0, 0, 10), dt.datetime(2020, 1, 1)]}
    ).write_parquet(g)
    out = ok(prep(g, "--user-col", "uid", "--item-col", "sku", "--time-col", "when"))
    assert histories(tmp_path / out) == {1: [("b", 1577836800), ("a", 1577836810)]}


def test_synthetic_matches_the_library(prep, tmp_path):
    out = ok(prep("--synthetic", "--users", 60, "--items", 40, "--seed", 2))
    assert out == Path("data/synthetic-u60-i40-s2")
    lib = prepare.prepare_synthetic(tmp_path / "lib", users=60, items=40, seed=2)
    assert (tmp_path / out / "manifest.json").read_text() == (lib / "manifest.json").read_text()


def test_processing_flags(prep, tmp_path):
    f = tmp_path / "ratings.csv"
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"1,{i},1,{100 + k}" for k, i in enumerate((5, 5, 6, 6, 6, 7))] + ["1,5,1,100"]  # an exact repeat
    rows += [f"2,{i},1,{200 + k}" for k, i in enumerate((5, 6, 5, 8))]
    f.write_text("\n".join(rows) + "\n")
    # dedupe drops (1,5,100)'s repeat; consecutive: user 1's second 5 and two 6s; items >= 2 drops 7, 8.
    # With --min-user-len 3 --kcore: user 1 (5 6) goes, then item 6 (one event left), then user 2 (5 5).
    code, _, err = prep(f, "--dedupe", "--dedupe-consecutive", "--min-item-count", 2, "--min-user-len", 3, "--kcore")
    assert code == 2 and "no events are left" in err
    out = ok(prep(f, "--dedupe", "--dedupe-consecutive", "--min-item-count", 2, "--out", "data/y"))
    assert histories(tmp_path / out) == {1: [(5, 100), (6, 102)], 2: [(5, 200), (6, 201), (5, 202)]}
    m = datadir.load_data_dir(tmp_path / out).manifest
    assert (m["counts"]["dropped_duplicates"], m["counts"]["dropped_consecutive"], m["counts"]["dropped_filtered"]) == (
        1,
        3,
        2,
    )


def test_temporal_split_flags(prep, tmp_path):
    f = tmp_path / "ratings.csv"
    f.write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{i},1,{t}\n" for u, i, t in [(1, 1, 10), (1, 2, 20), (1, 3, 30), (2, 1, 15), (2, 3, 40)])
    )
    out = ok(prep(f, "--split", "temporal", "--valid-cutoff", 20, "--test-cutoff", "q0.8"))
    d = datadir.load_data_dir(tmp_path / out)
    assert d.manifest["split"]["test_cutoff"] == 40  # q0.8: 80% of the times 10, 15, 20, 30, 40 are before it
    assert d.train_end.tolist() == [1, 4] and d.valid_end.tolist() == [3, 4]


def test_warns_when_the_split_leaves_no_targets(prep, tmp_path):
    """A log where every user has one or two events: a data dir train.py would refuse is still
    written (exit 0), with one warning line on stderr; a usable split gets no warning."""
    f = tmp_path / "short.csv"
    f.write_text("user_id,item_id,timestamp\n1,1,1\n1,2,2\n2,2,3\n3,1,4\n")
    code, out, err = prep(f)
    assert code == 0 and out.strip() == "data/short" and (tmp_path / "data/short/manifest.json").exists()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: the split leaves no validation and no test targets (leave-one-out holds out a "
        "user's last two events only when the user has 3 or more): train.py will refuse it"
    ]
    g = tmp_path / "temporal.csv"  # user 1 has a test target but none has a validation target
    g.write_text("user_id,item_id,timestamp\n1,1,10\n1,2,30\n2,1,11\n")
    code, _, err = prep(g, "--split", "temporal", "--valid-cutoff", 20, "--test-cutoff", 20)
    assert code == 0 and "warning: the split leaves no validation targets (no user has an event between" in err
    code, _, err = prep(f, "--shards", 2, "--out", "sharded")  # the sharded root's summed split, the same rule
    assert code == 0 and "warning: the split leaves no validation and no test targets" in err
    long = tmp_path / "long.csv"
    long.write_text("user_id,item_id,timestamp\n1,1,1\n1,2,2\n1,3,3\n")
    code, _, err = prep(long)
    assert code == 0 and "warning" not in err


# ---------------------------------------------------------------- bad input


def assert_refused(result: tuple[int, str, str], tmp_path: Path, match: str) -> None:
    code, out, err = result
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and match in lines[-1], err
    assert all(" s  " in line for line in lines[:-1]), err  # before the error: only progress log lines
    assert "Traceback" not in err
    left = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert left == [], f"left behind: {left}"


def test_bad_inputs(prep, tmp_path):
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.0,964982704\n")
    cases = [
        ((tmp_path / "nope.csv",), "does not exist"),
        ((tmp_path,), "is not a file"),
        ((csv, "--format", "csv", "--user-col", "user"), "has no column 'user'"),
        (
            (csv, "--format", "csv", "--item-col", "movieId", "--time-col", "rating", "--user-col", "ts"),
            "has no column 'ts'",
        ),
        ((csv, "--min-user-len", 5), "no events are left"),
        ((csv, "--split", "random"), "invalid choice: 'random'"),
        ((csv, "--format", "xml"), "invalid choice: 'xml'"),
        ((csv, "--time-unit", "h"), "invalid choice: 'h'"),
        ((csv, "--min-item-count", 0), "--min-item-count must be >= 1"),
        ((csv, "--split", "temporal"), "needs --valid-cutoff and --test-cutoff"),
        ((csv, "--split", "temporal", "--valid-cutoff", "soon", "--test-cutoff", "q0.9"), "cutoff 'soon'"),
        ((csv, "--split", "temporal", "--valid-cutoff", "q0.5", "--test-cutoff", "2100-01-01"), "no user has an event"),
        ((csv, "--no-such-flag"), "unrecognized arguments"),
        ((csv, "--synthetic"), "not both"),
        (("--synthetic", "--users", 0), "users must be >= 1"),
    ]
    for args, match in cases:
        assert_refused(prep(*args), tmp_path, match)

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_refused(prep(empty), tmp_path, "is empty")
    header_only = tmp_path / "header.csv"
    header_only.write_text("userId,movieId,rating,timestamp\n")
    assert_refused(prep(header_only), tmp_path, "no rows with a user, an item and a time")
    words = tmp_path / "words.csv"
    words.write_text("userId,movieId,rating,timestamp\n1,1,4.0,yesterday\n")
    assert_refused(prep(words), tmp_path, "time column")
    binary = tmp_path / "junk.bin"
    binary.write_bytes(bytes(range(256)) * 20)
    assert_refused(prep(binary, "--format", "csv"), tmp_path, "cannot read")
    back = tmp_path / "back.txt"
    back.write_text("1 10 100\n1 11 90\n")
    assert_refused(prep(back, "--format", "pairs"), tmp_path, "time goes backwards for user 1 at line 2")
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("1 2 3 4\n")
    assert_refused(prep(ragged, "--format", "pairs"), tmp_path, "4 columns")
    assert list(tmp_path.rglob("manifest.json")) == []  # no data dir was written


def test_rerun_reuses_an_identical_data_dir(prep, tmp_path):
    """Rerunning the README's pipe: the same input (by content, wherever it lies) with the same
    parameters gives the same dir, so prep prints its path without preparing it again; another
    input or another parameter is refused as before."""
    f = tmp_path / "ratings.dat"
    f.write_text("1::1::5::10\n1::2::5::20\n1::3::5::30\n")
    out = ok(prep(f))
    manifest = tmp_path / out / "manifest.json"
    written = manifest.stat().st_mtime_ns
    code, stdout, stderr = prep(f)
    assert code == 0 and stdout == f"{out}\n" and "reusing it" in stderr, stderr
    copy = tmp_path / "elsewhere" / "ratings.dat"  # the same content under another path
    copy.parent.mkdir()
    copy.write_bytes(f.read_bytes())
    assert ok(prep(copy, "--out", out)) == out
    assert manifest.stat().st_mtime_ns == written  # never written again
    assert_refused(prep(f, "--min-user-len", "2"), tmp_path, "already exists; pass --force")  # other parameters
    f.write_text("1::1::5::10\n1::2::5::20\n")
    assert_refused(prep(f), tmp_path, "already exists; pass --force")  # other content
    assert manifest.stat().st_mtime_ns == written
    syn = ok(prep("--synthetic", "--users", "30", "--items", "40"))  # synthetic: the same settings
    code, stdout, stderr = prep("--synthetic", "--users", "30", "--items", "40")
    assert code == 0 and stdout == f"{syn}\n" and "reusing it" in stderr
    assert_refused(prep("--synthetic", "--users", "30", "--items", "40", "--out", out), tmp_path, "already exists")


def test_force(prep, tmp_path):
    f = tmp_path / "ratings.dat"
    f.write_text("1::1::5::10\n1::2::5::20\n")
    out = ok(prep(f))
    first = (tmp_path / out / "manifest.json").read_text()
    f.write_text("1::1::5::10\n1::2::5::20\n2::1::5::30\n")
    assert_refused(prep(f), tmp_path, "already exists; pass --force")
    assert (tmp_path / out / "manifest.json").read_text() == first  # untouched
    ok(prep(f, "--force"))
    assert datadir.load_data_dir(tmp_path / out).n_users == 2
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("...")
    assert_refused(prep(f, "--out", "precious", "--force"), tmp_path, "has no manifest.json")
    assert (tmp_path / "precious" / "thesis.tex").exists()


TIMES_IDS = "user_id,item_id,timestamp\n"
BAD_VALUES = [  # (file, its contents, extra args, the error): values Polars cannot convert after the read
    (
        "huge.csv",
        TIMES_IDS + "1,10,1e300\n1,11,2\n",
        (),
        "the time column 'timestamp' of huge.csv has a value outside the int64 range: 1e+300",
    ),
    (
        "inf.csv",
        TIMES_IDS + "1,10,inf\n1,11,2\n",
        (),
        "the time column 'timestamp' of inf.csv has a value outside the int64 range: inf",
    ),
    (
        "i128.csv",
        TIMES_IDS + "1,10,99999999999999999999\n1,11,2\n",
        (),
        "outside the int64 range: 99999999999999999999",
    ),
    (
        "i128.csv",
        TIMES_IDS + "1,10,99999999999999999999\n1,11,2\n",
        ("--shards", 2),
        "outside the int64 range: 99999999999999999999",
    ),
    (
        "u64.parquet",
        pl.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": pl.Series([1, 2**63 + 5], dtype=pl.UInt64)}),
        (),
        "the time column 'timestamp' of u64.parquet has a value outside the int64 range: 9223372036854775813",
    ),
    (
        "infid.parquet",
        pl.DataFrame({"user_id": [1, 1], "item_id": [1.0, float("inf")], "timestamp": [1, 2]}),
        (),
        "the item column 'item_id' of infid.parquet has a value outside the int64 range: inf",
    ),
    (
        "list.parquet",
        pl.DataFrame({"user_id": [[1], [2]], "item_id": [1, 2], "timestamp": [1, 2]}),
        (),
        "the user column 'user_id' of list.parquet has type List(Int64); ids must be integers or text",
    ),
    (
        "list.parquet",
        pl.DataFrame({"user_id": [[1], [2]], "item_id": [1, 2], "timestamp": [1, 2]}),
        ("--shards", 2),
        "the user column 'user_id' of list.parquet has type List(Int64)",
    ),
    (
        "log.csv",
        TIMES_IDS + "1,10,1\n1,11,2\n",
        ("--item-index", "index.parquet"),
        "--item-index index.parquet: its count column must hold non-negative integers, without nulls (it is String)",
    ),
]


@pytest.mark.parametrize("name, contents, args, match", BAD_VALUES)
def test_bad_values_after_the_read(prep, tmp_path, name, contents, args, match):
    f = tmp_path / name
    if isinstance(contents, str):
        f.write_text(contents)
    else:
        contents.write_parquet(f)
    pl.DataFrame({"id": [10, 11], "count": ["many", "few"]}).write_parquet(tmp_path / "index.parquet")
    assert_refused(prep(name, *args), tmp_path, match)


def test_nan_ids_count_as_missing(prep, tmp_path):
    f = tmp_path / "nan.csv"
    f.write_text(TIMES_IDS + "1,NaN,1\n1,11.0,2\n1,12,3\n")
    m = datadir.load_data_dir(tmp_path / ok(prep(f))).manifest
    assert m["counts"]["dropped_missing"] == 1 and m["counts"]["rows_read"] == 3


@pytest.mark.parametrize(
    "args, match",
    [
        (("--synthetic", "--users", 5, "--seed", 2**64), "--seed must be <= 18,446,744,073,709,551,615"),
        (("--synthetic", "--users", 5, "--seed", -1), "--seed must be >= 0, got -1"),
        (("--synthetic", "--users", 5, "--items", 10**20), "--items must be <= 2,147,483,647"),
        (("ratings.csv", "--session-gap", 10**20), "--session-gap must be <= 9,223,372,036,854,775,807"),
        (
            ("ratings.csv", "--split", "temporal", "--valid-cutoff", 10**23, "--test-cutoff", 10**24),
            "--valid-cutoff must be <=",
        ),
        (
            ("ratings.csv", "--split", "temporal", "--valid-cutoff", 1, "--test-cutoff", -(10**24)),
            "--test-cutoff must be >=",
        ),
        (("ratings.csv", "--shards", 2, "--batch-rows", 10**20), "--batch-rows must be <="),
    ],
)
def test_integer_flags_out_of_range(prep, tmp_path, args, match):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.0,964982704\n")
    assert_refused(prep(*args), tmp_path, match)


@pytest.mark.parametrize(
    "args", [("--users", 10**15), ("--events", 10**18, "--shards", 16), ("--users", 10, "--items", 2**31 - 1)]
)
def test_synthetic_too_big_for_memory(tmp_path, args):
    r = run("--synthetic", *args, cwd=tmp_path, timeout=30)  # without the check it would run for days
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith("error: a synthetic log of") and "GiB of memory" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists()


def test_force_keeps_what_is_not_the_data_dir(prep, tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},{u % 3},4.0,{u}\n" for u in range(20)))
    out = tmp_path / ok(prep(raw, "--out", "data/ex"))
    shutil.copy(raw, out / "raw.csv")
    assert_refused(prep(out / "raw.csv", "--out", out, "--force"), tmp_path, "the input")
    assert_refused(prep(out / "items.parquet", "--out", out, "--force", "--format", "parquet"), tmp_path, "the input")
    assert_refused(prep(raw, "--out", out, "--force", "--item-index", out / "items.parquet"), tmp_path, "the input")
    assert_refused(prep(raw, "--out", out, "--force"), tmp_path, "it holds raw.csv, which is not part of a data dir")
    assert (out / "raw.csv").exists()
    (out / "raw.csv").unlink()
    ok(prep(raw, "--out", out, "--force"))  # a data dir alone is replaced
    sharded = ok(prep(raw, "--out", "data/sh", "--shards", 2))
    ok(prep(raw, "--out", sharded, "--shards", 2, "--force"))  # so is a sharded one, shard dirs and all
    # a dir with a manifest is not a shard unless it is one of the shard dirs, and a shard holds only data
    old = tmp_path / sharded / "old"
    old.mkdir()
    shutil.copy(tmp_path / sharded / "manifest.json", old)
    assert_refused(prep(raw, "--out", sharded, "--shards", 2, "--force"), tmp_path, "it holds")
    shutil.rmtree(old)
    (tmp_path / sharded / "shard-00001" / "notes.txt").write_text("mine")
    assert_refused(prep(raw, "--out", sharded, "--shards", 2, "--force"), tmp_path, "notes.txt")
    assert (tmp_path / sharded / "shard-00001" / "notes.txt").read_text() == "mine"


def test_confusing_inputs(prep, tmp_path):
    rows = "user_id,item_id,timestamp\n" + "".join(f"{u},{u + 1},{u}\n" for u in range(20_000))
    gz = gzip.compress(rows.encode())
    (tmp_path / "cut.csv.gz").write_bytes(gz[: len(gz) // 2])
    write_zst(tmp_path / "whole.csv.zst", rows)
    (tmp_path / "cut.csv.zst").write_bytes((tmp_path / "whole.csv.zst").read_bytes()[:5_000])
    (tmp_path / "plain.csv.gz").write_text(rows)
    (tmp_path / "comma.csv").write_text(rows)
    (tmp_path / "afile").write_text("")
    cases = [
        (("cut.csv.gz",), "cannot read cut.csv.gz"),
        (("cut.csv.zst",), "cannot read cut.csv.zst"),
        (("plain.csv.gz",), "plain.csv.gz is named .gz but is not a .gz file"),
        (
            ("comma.csv", "--format", "inter"),
            "has no '\\t' between its column names ('user_id,item_id,timestamp'): the separator is wrong",
        ),
        (("comma.csv", "--out", "afile/sub"), "cannot write afile/sub: "),
    ]
    for args, match in cases:
        assert_refused(prep(*args), tmp_path, match)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit != resource.RLIM_INFINITY:  # 4 spill files a shard: `limit` shards are too many
        assert_refused(prep("comma.csv", "--shards", limit), tmp_path, f"over this process's limit of {limit:,}")


# ---------------------------------------------------------------- real processes, pipes


def run(*args: object, cwd: Path, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PREP), *map(str, args)],
        cwd=cwd,
        text=True,
        capture_output=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=timeout,
    )


def test_subprocess_pipe_and_errors(tmp_path):
    f = tmp_path / "ml.txt"
    f.write_text("1 1\n1 2\n1 3\n2 2\n2 3\n2 1\n")
    r = run(cwd=tmp_path, stdin=f"{f}\n")  # path from stdin, as in `ls x | prep.py`
    assert r.returncode == 0, r.stderr
    assert r.stdout == "data/ml\n" and (tmp_path / "data/ml/manifest.json").exists()
    assert "users" in r.stderr  # the summary table goes to stderr
    r = run(cwd=tmp_path)  # nothing given, nothing piped
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: no input file given")
    r = run(tmp_path / "missing.csv", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"error: input file {tmp_path / 'missing.csv'} does not exist"


# ---------------------------------------------------------------- the shared real data


@pytest.mark.skipif(not (SHARED / "ml-1m" / "ml-1m.txt.gz").exists(), reason="../shared/data is absent")
def test_ml1m(prep, tmp_path):
    out = ok(prep(SHARED / "ml-1m" / "ml-1m.txt.gz"))
    d = datadir.load_data_dir(tmp_path / out)
    assert (d.n_users, d.n_items, d.n_events) == (6040, 3416, 999_611)
    users, end = d.eval_targets("test")
    assert len(users) == 6040 and (end == d.offsets[1:] - 1).all()


@pytest.mark.skipif(not (SHARED / "ml-latest-small" / "ratings.csv.gz").exists(), reason="../shared/data is absent")
def test_ml_latest_small_temporal(prep, tmp_path):
    out = ok(
        prep(
            SHARED / "ml-latest-small" / "ratings.csv.gz",
            "--split",
            "temporal",
            "--valid-cutoff",
            "2016-01-01",
            "--test-cutoff",
            "2017-01-01",
        )
    )
    d = datadir.load_data_dir(tmp_path / out)
    assert (d.n_users, d.n_items, d.n_events) == (610, 9724, 100_836)
    s = d.manifest["split"]
    assert s["kind"] == "temporal" and s["valid_cutoff"] == 1451606400 and s["test_cutoff"] == 1483228800
    for split, cutoff in (("valid", 1451606400), ("test", 1483228800)):
        users, end = d.eval_targets(split)
        assert len(users) > 10
        assert (d.ts[end] >= cutoff).all() and (d.ts[end - 1] < cutoff).all()  # first event at/after the cutoff
    assert json.loads((tmp_path / out / "manifest.json").read_text())["params"]["split"] == "temporal"
