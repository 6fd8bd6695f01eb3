"""Prepare an interaction log as a data dir; prints its path on stdout.

    python scripts/prep.py ../shared/data/ml-1m/ml-1m.txt.gz                    # -> data/ml-1m
    python scripts/prep.py ../shared/data/ml-latest-small/ratings.csv.gz \\
        --split temporal --valid-cutoff q0.8 --test-cutoff q0.9                 # -> data/ratings
    python scripts/prep.py events.csv.gz --dedupe --kcore --min-item-count 5 --min-user-len 5
    python scripts/prep.py log.parquet --user-col uid --item-col sku --time-col when --time-unit ms
    python scripts/prep.py sessions.txt --format items                          # one sequence per line
    python scripts/prep.py --synthetic --users 2000 --items 3000 --seed 0       # -> data/synthetic-u2000-i3000-s0
    python scripts/prep.py --synthetic --events 100000000 --out data/synth-1e8
    python scripts/prep.py ratings.dat | python scripts/train.py --stride 64
    python scripts/prep.py log.parquet --shards 16 --out data/big                # bounded memory, 10^9 events

Formats (--format; detected from the file name and first lines when absent), plain, .gz or .zst:
    retailrocket  events.csv: timestamp,visitorid,event,itemid,transactionid (ms); event -> types.npy
    ml-dat        MovieLens ratings.dat: UserID::MovieID::Rating::Timestamp
    ml-csv        MovieLens ratings.csv: userId,movieId,rating,timestamp
    inter         RecBole .inter: tab-separated, header like user_id:token item_id:token ... timestamp:float
    pairs         `user item` per line (SASRec), each user's lines in time order; an optional third
                  column is an integer time (--time-unit), which must not decrease within a user
    seqs          `user item item ...`, one user per line, items in time order
    items         `item item ...`, one sequence per line (the line number is the user)
    csv, parquet  any table, with --user-col --item-col --time-col [--type-col]
Ordered formats without times (pairs, seqs, items) get ts = the event's position in the file.

Then: drop rows with a missing user/item/time, optional dedupe and filters, items 1..N by
descending count, group by user in time order, sessions, split; see longrec_core.data.prepare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

# Polars allocates through jemalloc, which by default keeps freed pages for 10 s; prep frees
# the whole raw table right before the NumPy stages, so have them returned promptly (this
# lowers peak RSS by about the raw table's size). Set before Polars loads; yours wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from longrec_core import cli, data, shards, synthetic  # noqa: E402

FORMATS = ("retailrocket", "ml-dat", "ml-csv", "inter", "pairs", "seqs", "items", "csv", "parquet")
ORDERED = ("pairs", "seqs", "items")
COMPRESSED = {".gz": b"\x1f\x8b", ".zst": b"\x28\xb5\x2f\xfd", ".zstd": b"\x28\xb5\x2f\xfd"}  # ext -> magic bytes
RETAILROCKET_HEADER = "timestamp,visitorid,event,itemid,transactionid"
RETAILROCKET_TYPES = ["view", "addtocart", "transaction"]  # codes 1, 2, 3 (0 = padding)
GUESS = {  # column names tried for csv/parquet when --user-col/--item-col/--time-col are absent
    "user": ["user_id", "userId", "user", "uid", "visitorid", "UserID", "customer_id"],
    "item": ["item_id", "itemId", "movieId", "item", "iid", "itemid", "product_id", "MovieID", "sku"],
    "time": ["timestamp", "ts", "time", "datetime", "event_time", "Timestamp", "date"],
}
UNIT_DIV = {"s": 1, "ms": 1_000, "us": 1_000_000}
# What a data dir holds (README, "A data dir"), besides shard-NNNNN dirs holding the same: --force
# replaces a dir that holds nothing else.
DATA_DIR_FILES = {data.MANIFEST, "items.npy", "ts.npy", "offsets.npy", "types.npy", "sessions.npy", "split.npz",
                  "items.parquet", "users.parquet"}
# Peak memory of a synthetic prep, measured with /usr/bin/time at 8e6 to 3e7 events and 4e6 to
# 8e6 items: about 60 bytes per event of the data dir (of one shard with --shards) plus 280
# bytes per catalogue item.
SYNTH_EVENT_BYTES, SYNTH_ITEM_BYTES = 60, 280

# ---------------------------------------------------------------------------------------------
# settings
p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
g = p.add_argument_group("input")
g.add_argument("input", nargs="?", help="log file (.gz/.zst read transparently); its path is read from stdin when piped (not the log itself); omit with --synthetic")
g.add_argument("--format", choices=FORMATS, default=None, help="input format (default: detect from name and first lines)")
g.add_argument("--user-col", default=None, help="csv/parquet: user column (default: a common name such as user_id)")
g.add_argument("--item-col", default=None, help="csv/parquet: item column (default: a common name such as item_id)")
g.add_argument("--time-col", default=None, help="csv/parquet: time column, numbers or dates (default: a common name such as timestamp)")
g.add_argument("--type-col", default=None, help="csv/parquet: event type column, kept as types.npy (default: none)")
g.add_argument("--time-unit", choices=tuple(UNIT_DIV), default=None, help="unit of numeric times (default: s; ms for retailrocket)")
g.add_argument("--separator", default=None, help="csv: field separator (default: tab if the header has tabs and no commas, else ',')")
g = p.add_argument_group("synthetic input (longrec_core.synthetic)")
g.add_argument("--synthetic", action="store_true", help="generate a log instead of reading one")
g.add_argument("--users", type=int, default=None, help="synthetic: users (default: 2000, or from --events)")
g.add_argument("--items", type=int, default=3000, help="synthetic: items (default: 3000)")
g.add_argument("--events", type=int, default=None, help="synthetic: about this many events; sets --users (default: none)")
g.add_argument("--seed", type=int, default=0, help="synthetic: seed; same seed, same log (default: 0)")
g = p.add_argument_group("processing")
g.add_argument("--dedupe", action="store_true", help="drop exact repeats of (user, item, time, type) (default: off)")
g.add_argument("--dedupe-consecutive", action="store_true", help="drop an event whose item equals the user's previous one (default: off)")
g.add_argument("--min-item-count", type=int, default=1, help="drop items with fewer events (default: 1)")
g.add_argument("--min-user-len", type=int, default=1, help="drop users with fewer events (default: 1)")
g.add_argument("--kcore", action="store_true", help="repeat both filters until nothing changes (default: off)")
g.add_argument("--session-gap", type=int, default=1800, help="seconds of inactivity that start a new session (default: 1800)")
g.add_argument("--split", choices=("loo", "temporal"), default="loo", help="loo: last event test, second last valid; temporal: global cutoffs (default: loo)")
g.add_argument("--valid-cutoff", default=None, help="temporal: int seconds, ISO date (2015-08-01) or quantile of all times (q0.8)")
g.add_argument("--test-cutoff", default=None, help="temporal: same forms; a user's first event at or after it is the test target")
g = p.add_argument_group("output")
g.add_argument("--out", default=None, help="data dir to write (default: data/<input stem> or data/synthetic-u<U>-i<N>-s<S>)")
g.add_argument("--force", action="store_true", help="replace an existing data dir (default: refuse); a dir holding anything else, or the input, is never replaced")
g.add_argument("--shards", type=int, default=None,
               help="write N shards by user hash, streaming the input in batches so memory is bounded by one "
                    "shard, not the log (integer ids; no --kcore or quantile cutoffs) (default: one data dir)")
g.add_argument("--item-index", default=None,
               help="Parquet table (id, count) of the whole catalogue: index items by it instead of by this "
                    "input's counts, so shards prepared on different machines share one index (default: none)")
g.add_argument("--assemble", action="store_true",
               help="make --out a sharded dir from the data dirs inside it (each prepared with the same "
                    "--item-index, which this also needs) (default: off)")
g.add_argument("--batch-rows", type=int, default=20_000_000, help="--shards: input rows per batch (default: 20,000,000)")


# ---------------------------------------------------------------------------------------------
# readers: each returns a LazyFrame with columns user, item, ts (raw) and optionally type


def strip_compression(name: str) -> str:
    for ext in COMPRESSED:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def check_compression(path: Path) -> None:
    """Refuse a file whose name says .gz or .zst when it is not (Polars would read it as plain text)."""
    ext = next((e for e in COMPRESSED if path.name.lower().endswith(e)), None)
    if ext is not None:
        with open(path, "rb") as f:
            if not f.read(4).startswith(COMPRESSED[ext]):
                raise ValueError(f"{path} is named {ext} but is not a {ext} file (it lacks the magic bytes): "
                                 "rename or compress it")


def head_lines(path: Path, n: int = 50) -> list[str]:
    """The first lines of a text file, decompressed by Polars (gzip, zstd)."""
    try:
        df = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None, n_rows=n,
                         new_columns=["line"], schema={"line": pl.String}, truncate_ragged_lines=True)
    except pl.exceptions.PolarsError:
        raise ValueError(f"cannot read {path}: its first lines are not text (a binary file?)") from None
    lines = [s.rstrip("\r") for s in df["line"].fill_null("").to_list()]
    if any("\x00" in s or "\ufffd" in s for s in lines):
        raise ValueError(f"cannot read {path}: its first lines are not text (a binary file?)")
    return lines


def detect_format(path: Path) -> str:
    name = strip_compression(path.name).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".inter"):
        return "inter"
    lines = [s for s in head_lines(path) if s.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    first = lines[0].strip()
    if first.startswith(RETAILROCKET_HEADER):
        return "retailrocket"
    if first.startswith("userId,movieId"):
        return "ml-csv"
    if "::" in first:
        return "ml-dat"
    if re.match(r"^\w+:\w+\t", first):
        return "inter"
    if "," in first or ("\t" in first and not re.fullmatch(r"[\d\t ]+", first)):  # a header line
        return "csv"
    counts = {len(s.split()) for s in lines}
    if counts == {2}:
        return "pairs"
    # One sequence per line: `user item ...` when the first column counts 1, 2, 3, ... (user
    # ids), else items only (a session file starts each line with an item).
    heads = [s.split()[0] for s in lines]
    if all(h.isdigit() for h in heads) and all(int(b) == int(a) + 1 for a, b in zip(heads, heads[1:])):
        return "seqs"
    return "items"


def columns_of(lf: pl.LazyFrame) -> list[str]:
    return list(lf.collect_schema().names())


def pick(cols: list[str], flag: str | None, kind: str, path: Path) -> str:
    """The column for `kind` (user, item, time, type): the flag's, else a common name."""
    if flag is not None:
        if flag not in cols:
            raise ValueError(f"{path} has no column {flag!r} (its columns: {', '.join(cols)})")
        return flag
    for name in GUESS.get(kind, []):
        if name in cols:
            return name
    raise ValueError(f"{path} has no {kind} column I recognize: pass --{kind}-col (its columns: {', '.join(cols)})")


def read_table(path: Path, fmt: str, args: Any) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """csv, parquet, ml-csv, retailrocket, inter: a table with named columns."""
    sep = args.separator
    if fmt == "parquet":
        lf = pl.scan_parquet(path)
    else:
        if sep is None:
            first = head_lines(path, 1)[0] if fmt in ("csv", "ml-csv") else ""
            sep = "\t" if fmt == "inter" or ("\t" in first and "," not in first) else ","
        if len(sep) != 1:
            raise ValueError(f"--separator must be one character, got {sep!r}")
        lf = pl.scan_csv(path, separator=sep, has_header=True, infer_schema_length=10_000,
                         quote_char=None if fmt == "inter" else '"')
    cols = columns_of(lf)
    if fmt != "parquet" and len(cols) == 1:  # a log needs a user, an item and a time column
        raise ValueError(f"{path} has no {sep!r} between its column names ({cols[0]!r}): the separator is wrong; "
                         "pass --separator or another --format")
    user_col, item_col, time_col, type_col = args.user_col, args.item_col, args.time_col, args.type_col
    type_order: list[str] = []
    unit = args.time_unit or "s"
    if fmt == "retailrocket":
        user_col, item_col, time_col, type_col = "visitorid", "itemid", "timestamp", "event"
        unit, type_order = args.time_unit or "ms", RETAILROCKET_TYPES
    elif fmt == "ml-csv":
        user_col, item_col, time_col = user_col or "userId", item_col or "movieId", time_col or "timestamp"
    elif fmt == "inter":  # RecBole: `name:type` headers
        by_name = {c.split(":")[0]: c for c in cols}
        user_col = user_col or by_name.get("user_id", "user_id")
        item_col = item_col or by_name.get("item_id", "item_id")
        time_col = time_col or by_name.get("timestamp", "timestamp")
    user_col = pick(cols, user_col, "user", path)
    item_col = pick(cols, item_col, "item", path)
    time_col = pick(cols, time_col, "time", path)
    if type_col is not None:
        pick(cols, type_col, "type", path)
    exprs = [pl.col(user_col).alias("user"), pl.col(item_col).alias("item"), pl.col(time_col).alias("ts")]
    if type_col is not None:
        exprs.append(pl.col(type_col).cast(pl.String).alias("type"))
    info = {"columns": {"user": user_col, "item": item_col, "time": time_col, "type": type_col},
            "time_unit": unit, "type_order": type_order}
    if fmt != "parquet":
        info["separator"] = sep
    return lf.select(exprs), info


def read_ml_dat(path: Path) -> tuple[pl.LazyFrame, dict[str, Any]]:
    # `::` is two one-byte separators with an empty field between: u,'',i,'',r,'',t.
    lf = pl.scan_csv(path, separator=":", has_header=False, quote_char=None, infer_schema_length=10_000)
    cols = columns_of(lf)
    if len(cols) != 7:
        raise ValueError(f"{path} is not a MovieLens ratings.dat file (UserID::MovieID::Rating::Timestamp)")
    lf = lf.select(pl.col(cols[0]).alias("user"), pl.col(cols[2]).alias("item"), pl.col(cols[6]).alias("ts"))
    return lf, {"time_unit": "s"}


def read_pairs(path: Path, unit: str) -> tuple[pl.LazyFrame, dict[str, Any]]:
    first = next((s for s in head_lines(path) if s.strip()), "")
    sep = "\t" if "\t" in first else " "
    lf = pl.scan_csv(path, separator=sep, has_header=False, quote_char=None, infer_schema_length=10_000)
    cols = columns_of(lf)
    if len(cols) not in (2, 3):
        raise ValueError(f"{path} has {len(cols)} columns; the pairs format is `user item` or `user item time` per line")
    lf = lf.with_row_index("line").select(
        pl.col(cols[0]).alias("user"),
        pl.col(cols[1]).alias("item"),
        (pl.col(cols[2]) if len(cols) == 3 else pl.col("line")).cast(pl.Int64).alias("ts"),
        pl.col("line").cast(pl.Int64),
    )
    return lf, {"time_unit": unit if len(cols) == 3 else "s", "timed": len(cols) == 3, "separator": sep}


def read_sequences(path: Path, with_user: bool) -> tuple[pl.LazyFrame, dict[str, Any]]:
    lines = pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None,
                        new_columns=["line"], schema={"line": pl.String})
    tok = pl.col("line").str.extract_all(r"\S+")
    lf = lines.with_row_index("row").with_columns(tok.alias("tok")).filter(pl.col("tok").list.len() > int(with_user))
    if with_user:
        lf = lf.select(pl.col("tok").list.first().alias("user"), pl.col("tok").list.slice(1).alias("item"))
    else:
        lf = lf.select((pl.col("row").cast(pl.Int64) + 1).alias("user"), pl.col("tok").alias("item"))
    # Position in the file is the time: every event gets its own ordinal.
    lf = lf.explode("item").with_row_index("ts").with_columns(pl.col("ts").cast(pl.Int64))
    return lf.select("user", "item", "ts"), {"time_unit": "s"}


def column(info: dict[str, Any], kind: str, path: Path) -> str:
    """A column as errors name it: `the time column 'when' of log.csv` (formats without names: no name)."""
    name = info.get("columns", {}).get(kind)
    return f"the {kind} column{'' if name is None else f' {name!r}'} of {path}"


def as_int64(s: pl.Series, what: str) -> pl.Series:
    """`s` as Int64, refusing a value that does not fit (inf, 1e300, a uint64 above 2^63-1)."""
    out = s.cast(pl.Int64, strict=False)
    bad = s.filter(out.is_null() & s.is_not_null())
    if bad.len():
        raise ValueError(f"{what} has a value outside the int64 range: {bad[0]}")
    return out


def to_int_ids(s: pl.Series, what: str) -> pl.Series:
    """Integer ids stay integers; text that is all integers becomes Int64; other text stays text."""
    if s.dtype.is_integer():
        return s
    if s.dtype == pl.String:
        try:
            return s.cast(pl.Int64, strict=True)
        except pl.exceptions.InvalidOperationError:
            return s
    if s.dtype.is_float():
        if (s != s.floor()).any():
            raise ValueError(f"{what} has fractional ids")
        return as_int64(s, what)
    try:
        return s.cast(pl.String)
    except pl.exceptions.PolarsError:  # a list or struct column
        raise ValueError(f"{what} has type {s.dtype}; ids must be integers or text") from None


def to_seconds(s: pl.Series, unit: str, what: str) -> pl.Series:
    """Event times as int64 seconds (floor), from numbers in `unit`, dates or date strings."""
    if s.dtype == pl.String:
        try:
            s = s.str.to_datetime(strict=True, time_zone="UTC")
        except pl.exceptions.PolarsError:
            raise ValueError(f"{what} is neither numbers nor dates I can parse") from None
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("ms"))
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.epoch("s").cast(pl.Int64)
    if s.dtype.is_float():
        return as_int64((s / UNIT_DIV[unit]).floor(), what)
    if s.dtype.is_integer():
        return as_int64(s if unit == "s" else s // UNIT_DIV[unit], what)
    raise ValueError(f"{what} has type {s.dtype}, not numbers or dates")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def complete(df: pl.DataFrame) -> pl.Expr:
    """Rows with a user, an item and a time (a NaN counts as missing: pandas writes it for one)."""
    present = [pl.col(c).is_not_null() & pl.col(c).is_not_nan() if df[c].dtype.is_float() else pl.col(c).is_not_null()
               for c in ("user", "item", "ts")]
    return pl.all_horizontal(present)


def unreadable(path: Path, fmt: str | None, e: Exception) -> ValueError:
    """A read error from Polars (a bad line, a truncated .gz or .zst) as one sentence naming the file."""
    return ValueError(f"cannot read {path}{'' if fmt is None else f' as {fmt}'}: {cli.one_sentence(e)}")


def event_batches(lf: pl.LazyFrame, info: dict[str, Any], path: Path, fmt: str, batch_rows: int,
                  type_names: list[str], counts: dict[str, int]) -> Iterator[tuple[np.ndarray, ...]]:
    """--shards: the input in batches of raw events (user, item, ts, type codes or None).

    Ids must be integers; rows with a missing user/item/time are dropped and counted in
    `counts`; event types are coded 1 + their position in `type_names`, which grows as new
    names appear (prepare_sharded renumbers them as the unsharded prep does).
    """
    unit = info.get("time_unit", "s")
    user_col, item_col, time_col = (column(info, kind, path) for kind in ("user", "item", "time"))
    try:  # the batches are read as they are asked for, so read errors come from this loop
        for df in lf.collect_batches(chunk_size=batch_rows):
            counts["rows_read"] += df.height
            df = df.filter(complete(df))
            counts["dropped_missing"] += counts["rows_read"] - counts["kept"] - df.height
            counts["kept"] += df.height
            if df.height == 0:
                continue
            user, item = to_int_ids(df["user"], user_col), to_int_ids(df["item"], item_col)
            if not (user.dtype.is_integer() and item.dtype.is_integer()):
                raise ValueError(f"with --shards, user and item ids must be integers; {path} has text ids "
                                 "(give them dense integer ids first, e.g. in DuckDB: see the README)")
            types = None
            if "type" in df.columns:
                names = df["type"].fill_null("")
                for t in names.unique(maintain_order=True).to_list():
                    if t not in type_names:
                        type_names.append(t)
                if len(type_names) > 127:
                    raise ValueError(f"the type column has {len(type_names)} distinct values; at most 127 are supported")
                types = names.replace_strict({t: k + 1 for k, t in enumerate(type_names)}, return_dtype=pl.Int8).to_numpy()
            yield (as_int64(user, user_col).to_numpy(), as_int64(item, item_col).to_numpy(),
                   to_seconds(df["ts"], unit, time_col).to_numpy(), types)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise unreadable(path, fmt, e) from None


# ---------------------------------------------------------------------------------------------
# checks made before any work


def check_shards(n: int) -> None:
    """--shards keeps a spill file per shard and column open: refuse more than the open-file limit allows."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per_shard = len(shards.SPILL_COLUMNS)
    most = (limit - 64) // per_shard  # 64: what else is open (the input, Polars, the console)
    if limit != resource.RLIM_INFINITY and n > most:
        raise ValueError(f"--shards {n:,} would keep {n * per_shard:,} files open, over this process's limit of "
                         f"{limit:,} (ulimit -n): use at most {max(most, 0):,} shards or raise the limit")


def check_synthetic_memory(cfg: synthetic.SyntheticConfig, n_shards: int) -> None:
    """Refuse a synthetic log too big for this machine's memory, rather than run for hours and then fail."""
    events = cfg.users * cfg.expected_len()
    need = events / n_shards * SYNTH_EVENT_BYTES + cfg.items * SYNTH_ITEM_BYTES
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ValueError(f"a synthetic log of {cfg.users:,} users (about {events:.3g} events) and {cfg.items:,} items "
                         f"needs about {need / 2**30:,.0f} GiB of memory{'' if n_shards == 1 else ' per shard'}; "
                         f"this machine has {have / 2**30:,.0f} GiB: ask for fewer --users/--events/--items or more --shards")


def check_out(out: Path, force: bool, inputs: list[Path]) -> None:
    """Refuse an --out that cannot be made, or whose replacement (--force) would delete more than
    the old data dir: an input inside it, or any file a data dir does not hold."""
    cli.check_replaceable(out, force, data.MANIFEST)
    cli.check_parent_dir(out)
    if out.is_dir():  # with --force, a data dir or an empty dir (check_replaceable)
        for path in inputs:
            if path.resolve().is_relative_to(out.resolve()):
                raise ValueError(f"refusing to replace {out}: the input {path} is inside it")
        foreign = foreign_entries(out)
        if foreign:
            raise ValueError(f"refusing to replace {out}: it holds {foreign[0].relative_to(out)}, which is not part "
                             "of a data dir (move it out first)")


def foreign_entries(path: Path) -> list[Path]:
    """What a (sharded) data dir at `path` holds beyond data-dir files and its shard-NNNNN dirs."""
    foreign = []
    for entry in sorted(path.iterdir()):
        if re.fullmatch(r"shard-\d{5}", entry.name) and entry.is_dir() and not entry.is_symlink():
            foreign += foreign_entries(entry)
        elif entry.name not in DATA_DIR_FILES:
            foreign.append(entry)
    return foreign


# ---------------------------------------------------------------------------------------------
def main() -> None:
    args = p.parse_args()
    t0 = time.perf_counter()
    params = data.PrepParams(
        dedupe=args.dedupe, dedupe_consecutive=args.dedupe_consecutive, min_item_count=args.min_item_count,
        min_user_len=args.min_user_len, kcore=args.kcore, session_gap=args.session_gap, split=args.split,
        valid_cutoff=args.valid_cutoff, test_cutoff=args.test_cutoff,
    )  # checks the values: bad ones raise ValueError -> exit 2
    cli.check_int("--session-gap", args.session_gap, 1)
    for flag, cutoff in (("--valid-cutoff", args.valid_cutoff), ("--test-cutoff", args.test_cutoff)):
        if cutoff is not None:
            cli.check_int(flag, data.parse_cutoff(cutoff, None), -cli.INT64_MAX - 1)
    cli.check_int("--shards", args.shards, 1)
    if args.shards is not None:
        check_shards(args.shards)
    if args.item_index is not None and args.min_item_count > 1:
        raise ValueError("--min-item-count cannot be combined with --item-index: drop rare items from the table instead")
    cli.check_int("--batch-rows", args.batch_rows, 1)
    inputs = [] if args.item_index is None else [Path(args.item_index)]

    with cli.progress() as bar:
        task = bar.add_task("starting", total=None)

        def status(msg: str) -> None:
            cli.console.print(f"{time.perf_counter() - t0:7.1f} s  {msg}", highlight=False, markup=False, soft_wrap=True)
            bar.update(task, description=msg)

        if args.assemble:
            if args.out is None or args.item_index is None or args.input is not None:
                raise ValueError("--assemble needs --out DIR (holding the shard data dirs) and --item-index, and no input")
            out = Path(args.out)
            shards.assemble(out, args.item_index, status=status)
        elif args.synthetic:
            if args.input is not None:
                raise ValueError("give an input file or --synthetic, not both")
            if args.users is not None and args.events is not None:
                raise ValueError("give --users or --events, not both")
            cli.check_int("--users", args.users, 1)
            cli.check_int("--events", args.events, 1)
            cli.check_int("--items", args.items, 2, 2**31 - 1)  # items.npy is int32
            cli.check_int("--seed", args.seed, 0, 2**64 - 1)  # the generator hashes it as a uint64
            users = args.users if args.events is None else synthetic.users_for_events(args.events, items=args.items)
            users = 2_000 if users is None else users
            cfg = synthetic.SyntheticConfig(users=users, items=args.items, seed=args.seed)
            check_synthetic_memory(cfg, args.shards or 1)
            out = Path(args.out or f"data/synthetic-u{users}-i{args.items}-s{args.seed}")
            check_out(out, args.force, inputs)
            if args.shards is None:
                data.prepare_synthetic(out, params, force=args.force, status=status, users=users, items=args.items,
                                       seed=args.seed)
            else:
                batches = ((u, i, t, None) for u, i, t in synthetic.chunks(cfg))
                shards.prepare_sharded(batches, out, params, args.shards, {"synthetic": cfg.to_dict(), "format": "synthetic"},
                                       force=args.force, status=status)
        else:
            path = cli.input_path(args.input, "input file")
            if not path.exists():
                raise ValueError(f"input file {path} does not exist")
            if not path.is_file():
                raise ValueError(f"input {path} is not a file")
            stem = Path(strip_compression(path.name)).stem or "data"
            out = Path(args.out or f"data/{stem}")
            check_out(out, args.force, [path, *inputs])
            check_compression(path)
            fmt = args.format
            try:  # Polars raises OSError for a truncated .gz or .zst
                fmt = fmt or detect_format(path)
                status(f"reading {path} ({fmt})")
                if fmt == "ml-dat":
                    lf, info = read_ml_dat(path)
                elif fmt == "pairs":
                    lf, info = read_pairs(path, args.time_unit or "s")
                elif fmt in ("seqs", "items"):
                    lf, info = read_sequences(path, with_user=fmt == "seqs")
                else:
                    lf, info = read_table(path, fmt, args)
                if args.shards is None:
                    df = lf.collect(engine="streaming")
            except (pl.exceptions.PolarsError, OSError) as e:
                raise unreadable(path, fmt, e) from None
            if args.shards is not None:
                type_names: list[str] = []
                counts = {"rows_read": 0, "dropped_missing": 0, "kept": 0}
                source = {"path": str(path.resolve()), "sha256": sha256_file(path), "bytes": path.stat().st_size,
                          "format": fmt, **{k: v for k, v in info.items() if k not in ("type_order", "timed")}}
                shards.prepare_sharded(event_batches(lf, info, path, fmt, args.batch_rows, type_names, counts), out,
                                       params, args.shards, source, type_names=type_names,
                                       type_order=info.get("type_order", []), read_counts=counts,
                                       force=args.force, status=status)
            else:
                rows_read = df.height

                # Missing user/item/time: dropped and counted (NaNs count as missing too).
                ok = complete(df)
                n_ok = int(df.select(ok.sum()).item())
                if n_ok < rows_read:
                    df = df.filter(ok)  # a copy: only when something is missing
                if df.height == 0:
                    raise ValueError(f"{path} has no rows with a user, an item and a time")
                if fmt in ORDERED and info.get("timed"):
                    # Ordered formats: the file order is the truth, so a time that goes back is an error.
                    back = df.with_columns(pl.col("ts").diff().over("user").alias("dt")).filter(pl.col("dt") < 0)
                    if back.height:
                        line = int(back["line"][0]) + 1
                        raise ValueError(f"time goes backwards for user {back['user'][0]} at line {line} of {path}; "
                                         f"in the {fmt} format each user's lines must be in time order")
                status(f"read {rows_read:,} rows; coding ids")
                ts = to_seconds(df["ts"], info.get("time_unit", "s"), column(info, "time", path)).to_numpy()
                user, user_ids = data.dense_codes(to_int_ids(df["user"], column(info, "user", path)))
                item, item_ids = data.dense_codes(to_int_ids(df["item"], column(info, "item", path)))
                types, type_names = None, []
                if "type" in df.columns:
                    order = info.get("type_order", [])
                    found = df["type"].fill_null("").unique().sort().to_list()
                    type_names = [t for t in order if t in found] + [t for t in found if t not in order]
                    if len(type_names) > 127:
                        raise ValueError(f"the type column has {len(type_names)} distinct values; at most 127 are supported")
                    code_of = {t: k + 1 for k, t in enumerate(type_names)}
                    types = df["type"].fill_null("").replace_strict(code_of, return_dtype=pl.Int8).to_numpy()
                del df
                log = data.Log(user=user, item=item, ts=ts, types=types, user_ids=user_ids, item_ids=item_ids, type_names=type_names)
                n_kept = len(ts)
                del user, item, ts, types  # prepare() releases the log's arrays as it goes
                status(f"hashing {path}")
                source = {
                    "path": str(path.resolve()), "sha256": sha256_file(path), "bytes": path.stat().st_size,
                    "format": fmt, **{k: v for k, v in info.items() if k not in ("type_order", "timed")},
                    "rows_read": rows_read, "dropped_missing": rows_read - n_kept,
                }
                index = None if args.item_index is None else data.read_item_index(args.item_index, log.item_ids)
                data.prepare(log, out, params, source, force=args.force, status=status, item_index=index)

    # the manifest, checked (a sharded dir: its root, each shard checked as it was written)
    sharded = args.shards is not None or args.assemble
    manifest = data.load_data_dir(out).manifest if not sharded else json.loads((out / data.MANIFEST).read_text())
    rows = data.summary_rows(manifest) + [("seconds", f"{time.perf_counter() - t0:,.1f}")]
    cli.print_table(f"data dir {out}", rows)
    print(out)


if __name__ == "__main__":
    cli.stage_main(main)
