"""Input readers: a raw interaction log file as user, item and time columns.

Formats (`FORMATS`; `detect_format` guesses one from the file name and first lines), each plain,
.gz or .zst:

    retailrocket  events.csv: timestamp,visitorid,event,itemid,transactionid (ms); event -> types
    ml-dat        MovieLens ratings.dat: UserID::MovieID::Rating::Timestamp
    ml-csv        MovieLens ratings.csv: userId,movieId,rating,timestamp
    inter         RecBole .inter: tab-separated, header like user_id:token item_id:token ... timestamp:float
    pairs         `user item` per line, each user's lines in time order; an optional third column
                  is an integer time, which must not decrease within a user
    seqs          `user item item ...`, one user per line, items in time order
    items         `item item ...`, one sequence per line (the line number is the user)
    csv, parquet  any table with a user, an item and a time column (named, or guessed from `GUESS`)

`scan_log` returns a LazyFrame with columns user, item, ts (raw values: ids as in the file,
times in the file's unit) and optionally type (event type names) and line (pairs: the line
number), plus an `info` dict that describes the read for the manifest's source. Ordered formats
without times (pairs, seqs, items) get ts = the event's position in the file.

Two consumers turn the raw columns into codes: `read_log` collects the whole frame into a
`prepare.Log` (one data dir), and `event_batches` streams integer-id batches (a sharded prep).
Every problem with the input raises ValueError with one sentence naming the file.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from longrec_core import prepare
from longrec_core.cli import one_sentence

FORMATS = ("retailrocket", "ml-dat", "ml-csv", "inter", "pairs", "seqs", "items", "csv", "parquet")
ORDERED = ("pairs", "seqs", "items")  # the file order is the time order
COMPRESSED = {".gz": b"\x1f\x8b", ".zst": b"\x28\xb5\x2f\xfd", ".zstd": b"\x28\xb5\x2f\xfd"}  # ext -> magic bytes
RETAILROCKET_HEADER = "timestamp,visitorid,event,itemid,transactionid"
RETAILROCKET_TYPES = ["view", "addtocart", "transaction"]  # codes 1, 2, 3 (0 = padding)
GUESS = {  # column names tried for csv/parquet when no column is named
    "user": ["user_id", "userId", "user", "uid", "visitorid", "UserID", "customer_id"],
    "item": ["item_id", "itemId", "movieId", "item", "iid", "itemid", "product_id", "MovieID", "sku"],
    "time": ["timestamp", "ts", "time", "datetime", "event_time", "Timestamp", "date"],
}
UNIT_DIV = {"s": 1, "ms": 1_000, "us": 1_000_000}  # numeric time unit -> divisor to seconds
MAX_TYPES = 127  # types.npy is int8 and 0 is padding

Frame = tuple[pl.LazyFrame, dict[str, Any]]  # a reader's result: raw columns, and what the manifest says of them


# ---------------------------------------------------------------------------------------------
# The file: compression and format


def strip_compression(name: str) -> str:
    """`name` without a compression extension: `ratings.csv.gz` -> `ratings.csv`."""
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
                raise ValueError(
                    f"{path} is named {ext} but is not a {ext} file (it lacks the magic bytes): rename or compress it"
                )


def head_lines(path: Path, n: int = 50) -> list[str]:
    """The first lines of a text file, decompressed by Polars (gzip, zstd)."""
    try:
        df = pl.read_csv(
            path,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            n_rows=n,
            new_columns=["line"],
            schema={"line": pl.String},
            truncate_ragged_lines=True,
        )
    except pl.exceptions.PolarsError:
        raise ValueError(f"cannot read {path}: its first lines are not text (a binary file?)") from None
    lines = [s.rstrip("\r") for s in df["line"].fill_null("").to_list()]
    if any("\x00" in s or "\ufffd" in s for s in lines):
        raise ValueError(f"cannot read {path}: its first lines are not text (a binary file?)")
    return lines


def detect_format(path: Path) -> str:
    """The format of `path` (one of FORMATS) from its name, else from its first lines."""
    name = strip_compression(path.name).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".inter"):
        return "inter"
    try:  # Polars raises OSError for a truncated .gz or .zst
        lines = [s for s in head_lines(path) if s.strip()]
    except OSError as e:
        raise unreadable(path, None, e) from None
    if not lines:
        raise ValueError(f"{path} is empty")
    return _format_of_lines(lines)


def _format_of_lines(lines: list[str]) -> str:
    """The format of a text log whose non-empty first lines are `lines`."""
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
    if {len(s.split()) for s in lines} == {2}:
        return "pairs"
    # One sequence per line: `user item ...` when the first column counts 1, 2, 3, ... (user
    # ids), else items only (a session file starts each line with an item).
    heads = [s.split()[0] for s in lines]
    if all(h.isdigit() for h in heads) and all(int(b) == int(a) + 1 for a, b in pairwise(heads)):
        return "seqs"
    return "items"


def unreadable(path: Path, fmt: str | None, e: Exception) -> ValueError:
    """A read error from Polars (a bad line, a truncated .gz or .zst) as one sentence naming the file."""
    return ValueError(f"cannot read {path}{'' if fmt is None else f' as {fmt}'}: {one_sentence(e)}")


# ---------------------------------------------------------------------------------------------
# The readers of each format


def scan_log(
    path: Path,
    fmt: str,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    type_col: str | None = None,
    time_unit: str | None = None,
    separator: str | None = None,
) -> Frame:
    """The log at `path` in format `fmt` as raw columns (module docstring), lazily.

    The column flags apply to the table formats (csv, parquet, ml-csv, inter); `time_unit`
    (s, ms, us) to numeric times (default s; ms for retailrocket).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    if time_unit is not None and time_unit not in UNIT_DIV:
        raise ValueError(f"unknown time unit {time_unit!r}: one of {', '.join(UNIT_DIV)}")
    try:  # Polars reads the header or first lines here; a truncated .gz or .zst raises OSError
        if fmt == "ml-dat":
            return read_ml_dat(path)
        if fmt == "pairs":
            return read_pairs(path, time_unit or "s")
        if fmt in ("seqs", "items"):
            return read_sequences(path, with_user=fmt == "seqs")
        return read_table(
            path,
            fmt,
            user_col=user_col,
            item_col=item_col,
            time_col=time_col,
            type_col=type_col,
            time_unit=time_unit,
            separator=separator,
        )
    except (pl.exceptions.PolarsError, OSError) as e:
        raise unreadable(path, fmt, e) from None


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


def read_table(
    path: Path,
    fmt: str,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    type_col: str | None = None,
    time_unit: str | None = None,
    separator: str | None = None,
) -> Frame:
    """csv, parquet, ml-csv, retailrocket, inter: a table with named columns."""
    lf, sep = _scan_table(path, fmt, separator)
    cols = columns_of(lf)
    if fmt != "parquet" and len(cols) == 1:  # a log needs a user, an item and a time column
        raise ValueError(
            f"{path} has no {sep!r} between its column names ({cols[0]!r}): the separator is wrong; "
            "pass --separator or another --format"
        )
    named = {"user": user_col, "item": item_col, "time": time_col, "type": type_col}
    unit, type_order = time_unit or "s", []
    if fmt == "retailrocket":
        named = {"user": "visitorid", "item": "itemid", "time": "timestamp", "type": "event"}
        unit, type_order = time_unit or "ms", RETAILROCKET_TYPES
    else:
        named.update({k: named[k] or v for k, v in _format_columns(fmt, cols).items()})
    for kind in ("user", "item", "time"):
        named[kind] = pick(cols, named[kind], kind, path)
    if named["type"] is not None:
        pick(cols, named["type"], "type", path)
    exprs = [
        pl.col(named["user"]).alias("user"),
        pl.col(named["item"]).alias("item"),
        pl.col(named["time"]).alias("ts"),
    ]
    if named["type"] is not None:
        exprs.append(pl.col(named["type"]).cast(pl.String).alias("type"))
    info = {"columns": named, "time_unit": unit, "type_order": type_order}
    if fmt != "parquet":
        info["separator"] = sep
    return lf.select(exprs), info


def _scan_table(path: Path, fmt: str, separator: str | None) -> tuple[pl.LazyFrame, str | None]:
    """A table format's LazyFrame and the field separator (None for Parquet)."""
    if fmt == "parquet":
        return pl.scan_parquet(path), None
    sep = separator
    if sep is None:
        first = head_lines(path, 1)[0] if fmt in ("csv", "ml-csv") else ""
        sep = "\t" if fmt == "inter" or ("\t" in first and "," not in first) else ","
    if len(sep) != 1:
        raise ValueError(f"--separator must be one character, got {sep!r}")
    lf = pl.scan_csv(
        path, separator=sep, has_header=True, infer_schema_length=10_000, quote_char=None if fmt == "inter" else '"'
    )
    return lf, sep


def _format_columns(fmt: str, cols: list[str]) -> dict[str, str]:
    """The user, item and time columns a known table format names (used when no flag names them)."""
    if fmt == "ml-csv":
        return {"user": "userId", "item": "movieId", "time": "timestamp"}
    if fmt == "inter":  # RecBole: `name:type` headers
        by_name = {c.split(":")[0]: c for c in cols}
        return {kind: by_name.get(f"{kind}_id", f"{kind}_id") for kind in ("user", "item")} | {
            "time": by_name.get("timestamp", "timestamp")
        }
    return {}


def read_ml_dat(path: Path) -> Frame:
    """MovieLens ratings.dat: UserID::MovieID::Rating::Timestamp (seconds)."""
    # `::` is two one-byte separators with an empty field between: u,'',i,'',r,'',t.
    lf = pl.scan_csv(path, separator=":", has_header=False, quote_char=None, infer_schema_length=10_000)
    cols = columns_of(lf)
    if len(cols) != 7:
        raise ValueError(f"{path} is not a MovieLens ratings.dat file (UserID::MovieID::Rating::Timestamp)")
    lf = lf.select(pl.col(cols[0]).alias("user"), pl.col(cols[2]).alias("item"), pl.col(cols[6]).alias("ts"))
    return lf, {"time_unit": "s"}


def read_pairs(path: Path, unit: str) -> Frame:
    """`user item [time]` per line, space- or tab-separated; without a time, ts = the line number."""
    first = next((s for s in head_lines(path) if s.strip()), "")
    sep = "\t" if "\t" in first else " "
    lf = pl.scan_csv(path, separator=sep, has_header=False, quote_char=None, infer_schema_length=10_000)
    cols = columns_of(lf)
    if len(cols) not in (2, 3):
        raise ValueError(
            f"{path} has {len(cols)} columns; the pairs format is `user item` or `user item time` per line"
        )
    lf = lf.with_row_index("line").select(
        pl.col(cols[0]).alias("user"),
        pl.col(cols[1]).alias("item"),
        (pl.col(cols[2]) if len(cols) == 3 else pl.col("line")).cast(pl.Int64).alias("ts"),
        pl.col("line").cast(pl.Int64),
    )
    return lf, {"time_unit": unit if len(cols) == 3 else "s", "timed": len(cols) == 3, "separator": sep}


def read_sequences(path: Path, with_user: bool) -> Frame:
    """One sequence per line: `user item item ...` (with_user) or `item item ...` (user = line number)."""
    lines = pl.scan_csv(
        path, has_header=False, separator="\x1f", quote_char=None, new_columns=["line"], schema={"line": pl.String}
    )
    tok = pl.col("line").str.extract_all(r"\S+")
    lf = lines.with_row_index("row").with_columns(tok.alias("tok")).filter(pl.col("tok").list.len() > int(with_user))
    if with_user:
        lf = lf.select(
            pl.col("tok").list.first().alias("user"), pl.col("tok").list.slice(1).alias("item"), pl.col("row")
        )
    else:
        lf = lf.select((pl.col("row").cast(pl.Int64) + 1).alias("user"), pl.col("tok").alias("item"))
    # Position in the file is the time: every event gets its own ordinal.
    lf = lf.explode("item").with_row_index("ts").with_columns(pl.col("ts").cast(pl.Int64))
    return lf.select("user", "item", "ts", *(["row"] if with_user else [])), {"time_unit": "s"}


def repeated_user_warning(df: pl.DataFrame, path: Path) -> str | None:
    """A `seqs` file gives each user one line; when a user has several, say so (or None).

    They are joined in file order (the position in the file is the time), which is right for a file
    of sessions with a user column and wrong for one concatenated twice (every event would count
    twice): a warning, not a refusal, since the first is a legitimate layout and the reader cannot
    tell them apart."""
    lines = df.group_by("user").agg(pl.col("row").n_unique().alias("n")).filter(pl.col("n") > 1)
    if lines.height == 0:
        return None
    first = lines.sort("user").row(0, named=True)
    users = f"{lines.height:,} users of {path} appear" if lines.height > 1 else f"a user of {path} appears"
    return (
        f"{users} on more than one line (user {first['user']} on {first['n']}): "
        "their lines are joined in file order into one history; if each line is its own sequence, use --format items"
    )


# ---------------------------------------------------------------------------------------------
# Raw values to ids, seconds and type codes


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


WIDE_INTS = ("Int128", "UInt128")  # what Polars reads for integers beyond 64 bits; NumPy has no such type


def to_int_ids(s: pl.Series, what: str) -> pl.Series:
    """Integer ids stay integers; text that is all integers becomes Int64; other text stays text.
    Integers beyond 64 bits (`99999999999999999999999`) are ids, not numbers: they are read as text."""
    if str(s.dtype) in WIDE_INTS:
        try:
            return s.cast(pl.Int64, strict=True)
        except pl.exceptions.InvalidOperationError:
            return s.cast(pl.String)
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


def code_types(names: pl.Series, type_names: list[str]) -> np.ndarray:
    """Event type names as int8 codes 1 + their position in `type_names`, which grows by the names
    not in it yet, in the order they first appear (a missing name is the empty name).

    The codes are provisional: `prepare.number_types` renumbers them as a data dir stores them.
    """
    names = names.fill_null("")
    for t in names.unique(maintain_order=True).to_list():
        if t not in type_names:
            type_names.append(t)
    if len(type_names) > MAX_TYPES:
        raise ValueError(f"the type column has {len(type_names)} distinct values; at most {MAX_TYPES} are supported")
    return names.replace_strict({t: k + 1 for k, t in enumerate(type_names)}, return_dtype=pl.Int8).to_numpy()


def complete(df: pl.DataFrame) -> pl.Expr:
    """Rows with a user, an item and a time (a NaN counts as missing: pandas writes it for one)."""
    present = [
        pl.col(c).is_not_null() & pl.col(c).is_not_nan() if df[c].dtype.is_float() else pl.col(c).is_not_null()
        for c in ("user", "item", "ts")
    ]
    return pl.all_horizontal(present)


# ---------------------------------------------------------------------------------------------
# From raw columns to codes: the whole log at once, or in batches


def read_log(
    lf: pl.LazyFrame, info: dict[str, Any], path: Path, fmt: str, status: prepare.Status | None = None
) -> tuple[prepare.Log, dict[str, int]]:
    """The whole log of `scan_log` as a coded `prepare.Log`, and the counts rows_read and
    dropped_missing (rows without a user, an item or a time) for the manifest.

    Ids become dense codes in raw-id order, times int64 seconds, event types the data dir's
    numbering (`prepare.number_types`). In an ordered format with times, a time that goes back
    within a user is an error: there the file order is the truth.
    """
    say = status or (lambda _msg: None)
    try:
        df = lf.collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as e:  # a bad line, a truncated .gz or .zst
        raise unreadable(path, fmt, e) from None
    rows_read = df.height
    df = _complete_rows(df, path)
    if fmt in ORDERED and info.get("timed"):
        _check_time_order(df, path, fmt)
    if "row" in df.columns:  # seqs
        warning = repeated_user_warning(df, path)
        if warning:
            sys.stderr.write(f"warning: {warning}\n")  # one line, and prep goes on
        df = df.drop("row")
    say(f"read {rows_read:,} rows; coding ids")
    ts = to_seconds(df["ts"], info.get("time_unit", "s"), column(info, "time", path)).to_numpy()
    user, user_ids = prepare.dense_codes(to_int_ids(df["user"], column(info, "user", path)))
    item, item_ids = prepare.dense_codes(to_int_ids(df["item"], column(info, "item", path)))
    types, type_names = None, []
    if "type" in df.columns:
        met: list[str] = []
        codes = code_types(df["type"], met)  # provisional: in the order the names appear
        lut, type_names = prepare.number_types(met, info.get("type_order", []))
        types = lut[codes]
    counts = {"rows_read": rows_read, "dropped_missing": rows_read - df.height}
    log = prepare.Log(
        user=user, item=item, ts=ts, types=types, user_ids=user_ids, item_ids=item_ids, type_names=type_names
    )
    return log, counts


def _complete_rows(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """`df` without the rows that miss a user, an item or a time; ValueError when none is left."""
    ok = complete(df)
    if int(df.select(ok.sum()).item()) < df.height:
        df = df.filter(ok)  # a copy: only when something is missing
    if df.height == 0:
        raise ValueError(f"{path} has no rows with a user, an item and a time")
    return df


def _check_time_order(df: pl.DataFrame, path: Path, fmt: str) -> None:
    """Refuse a time that goes back within a user (`df` in file order, with its line numbers)."""
    back = df.with_columns(pl.col("ts").diff().over("user").alias("dt")).filter(pl.col("dt") < 0)
    if back.height:
        line = int(back["line"][0]) + 1
        raise ValueError(
            f"time goes backwards for user {back['user'][0]} at line {line} of {path}; "
            f"in the {fmt} format each user's lines must be in time order"
        )


def event_batches(
    lf: pl.LazyFrame,
    info: dict[str, Any],
    path: Path,
    fmt: str,
    batch_rows: int,
    type_names: list[str],
    counts: dict[str, int],
) -> Iterator[tuple[np.ndarray, ...]]:
    """The input in batches of raw events (user, item, ts, type codes or None), for a sharded prep.

    Ids must be integers; rows with a missing user/item/time are dropped and counted in
    `counts` (rows_read, dropped_missing, kept); event types are coded by `code_types` into
    `type_names`, which grows as new names appear.
    """
    unit = info.get("time_unit", "s")
    user_col, item_col, time_col = (column(info, kind, path) for kind in ("user", "item", "time"))
    for key in ("rows_read", "dropped_missing", "kept"):
        counts.setdefault(key, 0)
    try:  # the batches are read as they are asked for, so read errors come from this loop
        for df in lf.collect_batches(chunk_size=batch_rows):
            rows = df.height
            df = df.filter(complete(df))
            counts["rows_read"] += rows
            counts["dropped_missing"] += rows - df.height
            counts["kept"] += df.height
            if df.height == 0:
                continue
            user, item = to_int_ids(df["user"], user_col), to_int_ids(df["item"], item_col)
            if not (user.dtype.is_integer() and item.dtype.is_integer()):
                raise ValueError(
                    f"with --shards, user and item ids must be integers; {path} has text ids "
                    "(give them dense integer ids first, e.g. in DuckDB: see docs/SCALE.md)"
                )
            types = code_types(df["type"], type_names) if "type" in df.columns else None
            yield (
                as_int64(user, user_col).to_numpy(),
                as_int64(item, item_col).to_numpy(),
                to_seconds(df["ts"], unit, time_col).to_numpy(),
                types,
            )
    except (pl.exceptions.PolarsError, OSError) as e:
        raise unreadable(path, fmt, e) from None
