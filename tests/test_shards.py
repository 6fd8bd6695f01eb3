"""Sharded data dirs (prep.py --shards N): the same users and events as one data dir, readers
that take one shard or several, and train.py / eval.py on them (one process and 2-process DDP)."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys

import numpy as np
import polars as pl
import pytest
from conftest import torchrun_train
from test_prep import ROOT, assert_refused, histories, ok, prep  # noqa: F401  (prep is a fixture)
from test_train import TINY, TRAIN, run

from longrec_core import datadir
from longrec_core.datadir import load_shards, shard_count
from longrec_core.shards import shard_of

EVAL = [sys.executable, str(ROOT / "scripts" / "eval.py")]


def shard_histories(path):
    """{raw user: events} over every shard, each read as its own data dir (items from the root)."""
    item_ids = pl.read_parquet(path / "items.parquet")["id"].to_list()
    root = json.loads((path / datadir.MANIFEST).read_text())
    out = {}
    for name in root["shards"]["dirs"]:
        d = datadir.load_data_dir(path / name, verify=True)
        users = pl.read_parquet(path / name / "users.parquet")["id"].to_list()
        for u, raw in enumerate(users):
            rows = []
            for i in range(d.offsets[u], d.offsets[u + 1]):
                row = (item_ids[d.items[i] - 1], int(d.ts[i]))
                if d.types is not None:
                    row += (root["types"][d.types[i] - 1],)
                rows.append(row)
            assert raw not in out, f"user {raw} is in two shards"
            out[raw] = rows
            assert shard_of(np.array([raw]), root["shards"]["count"])[0] == root["shards"]["dirs"].index(name)
    return out


def split_positions(path):
    """{raw user: (train events, valid events)} of a data dir (sharded or not)."""
    d = datadir.load_data_dir(path)
    users = (
        pl.concat([pl.read_parquet(path / n / "users.parquet") for n in d.manifest["shards"]["dirs"]])
        if "shards" in d.manifest
        else pl.read_parquet(path / "users.parquet")
    )["id"].to_list()
    a = d.offsets[:-1]
    return {raw: (int(d.train_end[u] - a[u]), int(d.valid_end[u] - a[u])) for u, raw in enumerate(users)}


@pytest.fixture()
def log_csv(tmp_path):
    """A log with event types, a missing item, exact and consecutive repeats, rare items, short users."""
    rng = np.random.default_rng(0)
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    for user in range(1, 41):
        t = 1_433_221_000_000 + user * 1000
        for _ in range(int(rng.integers(1, 30))):
            t += int(rng.integers(0, 3)) * 60_000  # equal times happen: ties keep input order
            item = int(rng.zipf(1.5)) % 60 + 1
            event = ("view", "addtocart", "transaction")[int(rng.integers(0, 3))]
            rows.append(f"{t},{user * 7919},{event},{item},")
            if rng.random() < 0.1:
                rows.append(rows[-1])  # an exact repeat
    rows.insert(1, "1433221000000,3,view,,")  # a missing item in the first batch: counted once, not per batch
    rows.append("1433221999000,5,view,,")  # and in the last
    f = tmp_path / "events.csv"
    f.write_text("\n".join(rows) + "\n")
    return f


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--dedupe", "--dedupe-consecutive", "--min-item-count", "3", "--min-user-len", "4"],
        ["--min-user-len", "5", "--split", "temporal", "--valid-cutoff", "1433221300", "--test-cutoff", "1433221400"],
    ],
)
def test_shards_hold_exactly_the_unsharded_users(prep, tmp_path, log_csv, flags):  # noqa: F811
    one = ok(prep(log_csv, *flags, "--out", "one"))
    many = ok(prep(log_csv, *flags, "--shards", 3, "--batch-rows", 17, "--out", "many"))
    assert histories(tmp_path / one) == shard_histories(tmp_path / many)
    # the one item index (ids, order, counts), the split and every count agree
    assert pl.read_parquet(tmp_path / one / "items.parquet").equals(pl.read_parquet(tmp_path / many / "items.parquet"))
    assert split_positions(tmp_path / one) == split_positions(tmp_path / many)
    a, b = (json.loads((tmp_path / p / datadir.MANIFEST).read_text()) for p in (one, many))
    for key in ("events", "users", "items", "sessions", "rows_read", "dropped_missing", "history_len"):
        assert a["counts"][key] == b["counts"][key], key
    for key in ("train_events", "valid_targets", "test_targets"):
        assert a["split"][key] == b["split"][key], key
    assert a["types"] == b["types"] == ["view", "addtocart", "transaction"]


def test_synthetic_shards_and_readers(prep, tmp_path):  # noqa: F811
    one = tmp_path / ok(prep("--synthetic", "--users", 300, "--items", 200, "--out", "one"))
    many = tmp_path / ok(prep("--synthetic", "--users", 300, "--items", 200, "--shards", 4, "--out", "many"))
    assert shard_count(many) == 4 and shard_count(one) == 0
    whole = datadir.load_data_dir(many)  # every shard, concatenated
    assert (whole.n_users, whole.n_events, whole.n_items) == (300, datadir.load_data_dir(one).n_events, 200)
    two = load_shards(many, [1, 3])
    s1, s3 = load_shards(many, [1]), load_shards(many, [3])
    assert isinstance(s1.items, np.memmap)  # one shard: mapped, not copied
    np.testing.assert_array_equal(two.items, np.concatenate([s1.items, s3.items]))
    np.testing.assert_array_equal(two.offsets, np.concatenate([s1.offsets, s3.offsets[1:] + s1.n_events]))
    np.testing.assert_array_equal(two.train_end, np.concatenate([s1.train_end, s3.train_end + s1.n_events]))
    np.testing.assert_array_equal(two.sessions[-1], two.n_events)
    users, _ends = two.eval_targets("test")
    assert len(users) == len(s1.eval_targets("test")[0]) + len(s3.eval_targets("test")[0])
    with pytest.raises(datadir.DataDirError, match="cannot read shard"):
        load_shards(many, [4])


def sql_of_scale_doc() -> str:
    """The DuckDB statements of docs/SCALE.md (its one sql block), as a reader would paste them."""
    text = (ROOT / "docs" / "SCALE.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/SCALE.md should show one sql block"
    return blocks[0]


def raw_multi_file_log(root):
    """A log as an engine finds it: several Parquet files (user_key text, item_key a sparse
    integer, event_time a timestamp with microseconds), each user's events spread over them."""
    rng = np.random.default_rng(7)
    rows = []
    for u in rng.permutation(48):
        start = dt.datetime(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 300)))
        seconds = np.sort(rng.choice(10**7, size=int(rng.integers(1, 12)), replace=False))  # distinct per user
        for s in seconds:
            item = 10**12 + int(rng.zipf(1.6)) % 40 * 7919
            rows.append((f"u{u}", item, start + dt.timedelta(seconds=int(s), microseconds=int(rng.integers(0, 10**6)))))
    log = pl.DataFrame(rows, schema=["user_key", "item_key", "event_time"], orient="row")
    (root / "raw").mkdir()
    for k in range(3):
        log[k::3].write_parquet(root / "raw" / f"part-{k}.parquet")
    return log


def test_scale_doc_duckdb_recipe_equals_one_prep_of_the_whole_log(prep, tmp_path):  # noqa: F811
    """docs/SCALE.md's engine recipe for real: DuckDB runs its SQL on a multi-file Parquet log,
    each shard is prepped apart with --item-index, --assemble ties them, and the sharded dir has
    the same arrays as one prep of the whole log (and the same raw ids through the key tables)."""
    duckdb = pytest.importorskip("duckdb")
    log = raw_multi_file_log(tmp_path)  # the prep fixture runs in tmp_path: the SQL's paths are relative to it
    log.write_parquet(tmp_path / "whole.parquet")
    one = ok(
        prep(
            "whole.parquet",
            "--user-col",
            "user_key",
            "--item-col",
            "item_key",
            "--time-col",
            "event_time",
            "--out",
            "one",
        )
    )

    duckdb.connect().execute(sql_of_scale_doc())
    for k in range(16):  # the doc's loop
        ok(
            prep(
                f"grouped/shard={k}/data_0.parquet", "--item-index", "items.parquet", "--out", f"data/big/part-{k:02d}"
            )
        )
    big = ok(prep("--assemble", "--item-index", "items.parquet", "--out", "data/big"))

    assert shard_count(tmp_path / big) == 16
    whole, ref = datadir.load_data_dir(tmp_path / big), datadir.load_data_dir(tmp_path / one, verify=True)
    for name in ("items", "ts", "offsets", "sessions", "train_end", "valid_end"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(ref, name), err_msg=name)
    assert whole.n_items == ref.n_items and whole.manifest["split"] == ref.manifest["split"]
    # the engine's dense ids, mapped back through its key tables, are the whole log's raw ids
    item_key = dict(pl.read_parquet(tmp_path / "item_keys.parquet").select("item_id", "item_key").iter_rows())
    user_key = dict(pl.read_parquet(tmp_path / "user_keys.parquet").select("user_id", "user_key").iter_rows())
    big_items = pl.read_parquet(tmp_path / big / "items.parquet")
    ref_items = pl.read_parquet(tmp_path / one / "items.parquet")
    assert [item_key[i] for i in big_items["id"]] == ref_items["id"].to_list()
    assert big_items["count"].to_list() == ref_items["count"].to_list()
    big_users = pl.concat([pl.read_parquet(p / "users.parquet") for p in sorted((tmp_path / big).glob("part-*"))])
    assert [user_key[u] for u in big_users["id"]] == pl.read_parquet(tmp_path / one / "users.parquet")["id"].to_list()


def test_item_index_and_assemble_refusals(prep, tmp_path, log_csv):  # noqa: F811
    pl.read_csv(log_csv).drop_nulls(["itemid"]).group_by("itemid").len().rename(
        {"itemid": "id", "len": "count"}
    ).write_parquet(tmp_path / "items.parquet")
    ok(prep(log_csv, "--item-index", tmp_path / "items.parquet", "--out", "big/part0"))
    big = ok(prep("--assemble", "--item-index", tmp_path / "items.parquet", "--out", "big"))
    assert_refused(
        prep("--assemble", "--item-index", tmp_path / "items.parquet", "--out", big),
        tmp_path,
        "already has a manifest.json",
    )
    assert_refused(
        prep("--assemble", "--item-index", tmp_path / "items.parquet", "--out", "nothing"),
        tmp_path,
        "holds no data dirs to assemble",
    )
    assert_refused(
        prep(log_csv, "--item-index", tmp_path / "items.parquet", "--min-item-count", 2),
        tmp_path,
        "cannot be combined with --item-index",
    )
    pl.DataFrame({"id": [1], "count": [5]}).write_parquet(tmp_path / "few.parquet")
    assert_refused(
        prep(log_csv, "--item-index", tmp_path / "few.parquet", "--out", "x"),
        tmp_path,
        "of the input is not in --item-index",
    )
    for name, counts in (("negative", [5, -1]), ("null", [5, None])):
        pl.DataFrame({"id": [1, 2], "count": counts}).write_parquet(tmp_path / f"{name}.parquet")
        assert_refused(
            prep(log_csv, "--item-index", tmp_path / f"{name}.parquet", "--out", "x"),
            tmp_path,
            "its count column must hold non-negative integers, without nulls",
        )


def test_sharded_refusals(prep, tmp_path, log_csv):  # noqa: F811
    assert_refused(prep(log_csv, "--shards", 2, "--kcore"), tmp_path, "--kcore cannot be used with --shards")
    assert_refused(
        prep(log_csv, "--shards", 2, "--split", "temporal", "--valid-cutoff", "q0.8", "--test-cutoff", "q0.9"),
        tmp_path,
        "not a quantile",
    )
    assert_refused(prep(log_csv, "--shards", 0), tmp_path, "--shards must be >= 1")
    assert_refused(prep(log_csv, "--shards", 500), tmp_path, "has no events: use fewer --shards")
    text = tmp_path / "text.csv"
    text.write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu2,a,3\n")
    assert_refused(prep(text, "--shards", 2), tmp_path, "user and item ids must be integers")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    for shards, name in ((None, "one"), (2, "two")):
        argv = [
            sys.executable,
            str(ROOT / "scripts" / "prep.py"),
            "--synthetic",
            "--users",
            "80",
            "--items",
            "90",
            "--seed",
            "3",
            "--out",
            str(root / name),
        ] + ([] if shards is None else ["--shards", str(shards)])
        run(*argv)
    return root


def test_eval_of_a_sharded_dir_equals_the_unsharded(sharded, tmp_path):
    out = tmp_path / "run"
    run(*TRAIN, "--data", str(sharded / "one"), "--out", str(out), *TINY)
    for name in ("one", "two"):
        run(
            *EVAL,
            "--run",
            str(out),
            "--data",
            str(sharded / name),
            "--out",
            str(tmp_path / f"{name}.json"),
            "--bootstrap",
            "0",
        )
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert a["n_users"] == b["n_users"] > 0
    for key, value in a["metrics"].items():  # the same users, histories and model: the same metrics
        assert b["metrics"][key] == pytest.approx(value, abs=1e-12), key


def test_train_on_shards_one_process_and_two_ranks(sharded, tmp_path):
    run(*TRAIN, "--data", str(sharded / "two"), "--out", str(tmp_path / "one"), *TINY)
    run(
        *torchrun_train(),
        "--data",
        str(sharded / "two"),
        "--out",
        str(tmp_path / "ddp"),
        *TINY,
    )
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] > 0
    log = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert all(np.isfinite(json.loads(line)["loss"]) for line in log)
    # 2 shards and 3 processes cannot split evenly: refused before any work
    proc = run(
        *torchrun_train(3),
        "--data",
        str(sharded / "two"),
        "--out",
        str(tmp_path / "bad"),
        *TINY,
        check=False,
    )
    assert proc.returncode != 0 and "not a multiple of the 3 processes" in proc.stderr


def test_codes_read_a_sharded_dir_shard_by_shard(sharded):
    """training_events gives one memory-mapped part per shard (no concatenated copy), and the codes
    of the parts follow the SVD of all the users, as those of the unsharded dir."""
    from longrec_core.codes import training_events, training_item_factors

    parts, whole = training_events(sharded / "two"), training_events(sharded / "one")
    assert len(parts) == 2 and len(whole) == 1
    assert all(isinstance(items, np.memmap) for items, _, _ in parts)
    assert sum(len(e) for _, _, e in parts) == len(whole[0][2])  # every user, once
    n = datadir.load_data_dir(sharded / "one").n_items
    a, sa, seen_a = training_item_factors(parts, n, 3, seed=0)
    b, sb, seen_b = training_item_factors(whole, n, 3, seed=0)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-4)  # X's users in another order: the same XᵀX
    np.testing.assert_array_equal(seen_a, seen_b)
