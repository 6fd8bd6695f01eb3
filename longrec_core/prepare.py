"""The prep pipeline: a coded interaction log (any order) to a data dir.

`prepare()` groups, cleans, indexes, sessionizes and splits a log and writes it through
`longrec_core.datadir` (the format's owner); the readers (`longrec_core.readers`, for prep.py),
the sharded prep (`longrec_core.shards`) and `prepare_synthetic()` (also used by train.py for
data/demo) all go through it, so the same log always gives the same dir.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import longrec_core as core
from longrec_core import synthetic
from longrec_core.datadir import DataDirError, read_manifest, write_data_dir

_EMPTY = np.zeros(0, dtype=np.int64)
Status = Callable[[str], None]  # reports a stage ("grouping 1,000,000 events") to the caller


@dataclass
class Log:
    """An interaction log as the readers hand it over: dense codes, any event order.

    Codes follow raw-id order (code k is the k-th smallest raw id), so that ties in item
    frequency break by raw id and user indices follow raw ids.
    """

    user: np.ndarray  # (E,) int, user code 0..U-1
    item: np.ndarray  # (E,) int, item code 0..N-1
    ts: np.ndarray  # (E,) int64 seconds (or ordinal)
    types: np.ndarray | None  # (E,) int8 type 1..T, or None
    user_ids: pl.Series  # (U,) raw id of each user code
    item_ids: pl.Series  # (N,) raw id of each item code
    type_names: list[str] = dataclasses.field(default_factory=list)  # type k+1 = type_names[k]


def number_types(met: Sequence[str], order: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """How a data dir numbers event types: the names in a format's own `order` (retailrocket:
    view, addtocart, transaction) first, then the rest sorted, so the numbering does not depend
    on the order events arrive in. `met` are the names as a reader met them (provisional code
    c = 1 + position in `met`); returns (lut, names): lut[c] is c's code 1..T (lut[0] = 0, padding)
    and names[k] the name of code k + 1."""
    names = [t for t in order if t in met] + sorted(t for t in met if t not in order)
    lut = np.zeros(len(met) + 1, dtype=np.int8)
    lut[1:] = [names.index(t) + 1 for t in met]
    return lut, names


@dataclass
class PrepParams:
    """Every processing choice of prep.py (its flags), recorded in the manifest."""

    dedupe: bool = False  # drop exact repeats (same user, item, time, type)
    dedupe_consecutive: bool = False  # drop an event whose item equals the user's previous item
    min_item_count: int = 1  # drop items with fewer events
    min_user_len: int = 1  # drop users with fewer events
    kcore: bool = False  # repeat both filters until neither drops anything
    session_gap: int = 1800  # seconds between events that starts a new session
    split: str = "loo"  # "loo" | "temporal"
    valid_cutoff: str | None = None  # temporal: int seconds, ISO date, or quantile "q0.9"
    test_cutoff: str | None = None

    def __post_init__(self) -> None:
        if self.split not in ("loo", "temporal"):
            raise ValueError(f"--split must be 'loo' or 'temporal', got {self.split!r}")
        if self.split == "temporal" and (self.valid_cutoff is None or self.test_cutoff is None):
            raise ValueError("--split temporal needs --valid-cutoff and --test-cutoff")
        if self.split == "loo" and (self.valid_cutoff is not None or self.test_cutoff is not None):
            raise ValueError("--valid-cutoff and --test-cutoff only apply to --split temporal")
        for name in ("min_item_count", "min_user_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.session_gap < 1:
            raise ValueError(f"--session-gap must be >= 1 second, got {self.session_gap}")
        for name in ("valid_cutoff", "test_cutoff"):
            v = getattr(self, name)
            if v is not None:
                parse_cutoff(v, None)  # syntax only; quantiles need the data


_QUANTILE = re.compile(r"^q(0?\.\d+|0|1(\.0*)?)$")


def parse_cutoff(text: str, ts: np.ndarray | None) -> int:
    """A cutoff time in seconds from `text`: int seconds, ISO date/time (UTC unless it says
    otherwise), or a quantile `q0.9` of `ts`. With ts=None only checks the syntax (returns 0)."""
    s = str(text).strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    if _QUANTILE.match(s):
        if ts is None:
            return 0
        if len(ts) == 0:
            raise ValueError(f"cutoff {s}: no events to take a quantile of")
        return int(np.quantile(ts, float(s[1:]), method="higher"))
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"cutoff {s!r} is not int seconds, an ISO date (2015-08-01) or a quantile like q0.9") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def dense_codes(s: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Dense codes 0..K-1 in raw-id order, and the raw id of each code."""
    if s.dtype.is_integer() and s.len() > 0:
        lo, hi = int(s.min()), int(s.max())  # type: ignore[arg-type]
        if hi - lo < max(4 * s.len(), 1 << 20):  # ids in a compact range: a lookup table, no sort
            base = 0 if 0 <= lo and hi < max(8 * s.len(), 1 << 20) else lo  # no shifted copy if we can
            ids = s.to_numpy() if base == 0 else s.to_numpy() - base
            present = np.zeros(hi - base + 1, dtype=bool)
            present[ids] = True
            lut = np.cumsum(present, dtype=np.uint32) - np.uint32(1)  # (range,) code of each present id
            return lut[ids], pl.Series("id", np.flatnonzero(present) + base, dtype=s.dtype)
    code = s.rank("dense") - 1  # 1-based rank among the sorted unique values (u32)
    return code.to_numpy(), s.unique().sort().alias("id")


@dataclass
class ItemIndex:
    """Item indices 1..N by descending count (ties by raw id) over item codes 0..K-1."""

    index_of: np.ndarray  # (K,) int32: index of each code, 0 = dropped
    table: pl.DataFrame  # items.parquet: index, id (raw), count

    @property
    def n_items(self) -> int:
        return self.table.height


def index_items(counts: np.ndarray, item_ids: pl.Series) -> ItemIndex:
    """Index the items with count > 0 by descending count, ties by raw id (= code order, a stable sort)."""
    by_count = np.argsort(-counts, kind="stable")
    by_count = by_count[counts[by_count] > 0]  # item codes, in index order
    index_of = np.zeros(len(counts), dtype=np.int32)
    index_of[by_count] = np.arange(1, by_count.size + 1, dtype=np.int32)
    table = pl.DataFrame(
        {
            "index": np.arange(1, by_count.size + 1, dtype=np.int32),
            "id": item_ids.gather(by_count),
            "count": counts[by_count].astype(np.int64),
        }
    )
    return ItemIndex(index_of, table)


def read_item_index(path: str | os.PathLike[str], item_ids: pl.Series) -> ItemIndex:
    """A fixed item index from a table of the whole catalogue (columns `id`, `count`), e.g. made
    by an engine over a log too big for one machine: items 1..N by descending count, ties by
    id, as prep indexes them. `item_ids` are the raw ids of this log's item codes; each must be
    in the table (ValueError naming the first that is not)."""
    try:
        table = pl.read_parquet(path, columns=["id", "count"])
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(
            f"cannot read --item-index {path}: it needs a Parquet table with columns id, count ({e})"
        ) from None
    if table["id"].n_unique() != table.height:
        raise ValueError(f"--item-index {path} lists an item id twice")
    count = table["count"]
    if not count.dtype.is_integer() or count.null_count() or (count < 0).any():
        raise ValueError(
            f"--item-index {path}: its count column must hold non-negative integers, "
            f"without nulls (it is {count.dtype}{' with nulls' if count.null_count() else ''})"
        )
    table = table.sort(["count", "id"], descending=[True, False]).with_row_index("index", offset=1)
    table = table.select(pl.col("index").cast(pl.Int32), "id", pl.col("count").cast(pl.Int64))
    if item_ids.dtype != table["id"].dtype:
        try:
            item_ids = item_ids.cast(table["id"].dtype, strict=True)
        except pl.exceptions.PolarsError:
            raise ValueError(
                f"the input's item ids ({item_ids.dtype}) do not match --item-index {path} ({table['id'].dtype})"
            ) from None
    found = pl.DataFrame({"id": item_ids}).join(table, on="id", how="left", maintain_order="left")["index"]
    if found.null_count():
        missing = item_ids.filter(found.is_null())[0]
        raise ValueError(f"item id {missing} of the input is not in --item-index {path}")
    return ItemIndex(found.to_numpy().astype(np.int32), table)


def _counts_per_user(offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Kept events per user (U,), from a kept-before prefix sum: O(E) without a user array."""
    before = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=before[1:])
    return np.diff(before[offsets])


def group_log(log: Log) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Order `log` by (user, time), ties in input order: (offsets, present user codes in order,
    item, ts, types). The log is consumed: each of its arrays is released as soon as it is
    reordered, so peak memory stays near the log plus one array, not two logs."""
    perm, offsets = core.group(np.ascontiguousarray(log.user), np.ascontiguousarray(log.ts, dtype=np.int64))
    n_users_in = len(offsets) - 1
    # group() numbers the users that occur, in increasing code (= raw id) order.
    if n_users_in == len(log.user_ids):
        present = np.arange(n_users_in)
    else:
        present = np.flatnonzero(np.bincount(log.user, minlength=len(log.user_ids)))
    log.user = _EMPTY
    item, log.item = np.asarray(log.item)[perm], _EMPTY  # code order within each user is now time order
    ts, log.ts = np.asarray(log.ts, dtype=np.int64)[perm], _EMPTY
    types = None
    if log.types is not None:
        types, log.types = np.asarray(log.types, dtype=np.int8)[perm], _EMPTY
    return offsets, present, item, ts, types


def prepare(
    log: Log,
    out: str | os.PathLike[str],
    params: PrepParams,
    source: dict[str, Any],
    *,
    force: bool = False,
    status: Status | None = None,
    item_index: ItemIndex | None = None,
) -> Path:
    """Group, clean, index, sessionize and split `log`, then write the data dir `out`.

    Steps: stable (user, time) order (ties keep input order) -> optional exact and
    consecutive dedupe -> item/user filters (k-core: to a fixed point) -> items re-indexed
    1..N by descending count (ties by raw id), users 0..U-1 by raw id -> sessions -> split.
    Raises ValueError when nothing is left. `source` describes the input for the manifest;
    counts it holds (rows_read, dropped_missing) are kept. The log is consumed: its event
    arrays are released (set to empty) as soon as they are reordered, to bound peak memory.

    `item_index` (one shard of a sharded prep) fixes the item indices from the whole log: items
    it does not index are dropped in place of the item filter, and the dir gets no items.parquet
    (the sharded root holds the one item table).
    """
    say = status or (lambda _msg: None)
    n_in = len(log.item)
    if n_in == 0:
        raise ValueError("the input has no events")

    say(f"grouping {n_in:,} events by user and time")
    offsets, present, item, ts, types = group_log(log)
    allowed = None if item_index is None else item_index.index_of > 0
    keep, dropped = keep_mask(offsets, item, ts, types, len(log.item_ids), params, say, allowed=allowed)
    offsets, user_codes, item, ts, types = _kept_events(offsets, keep, item, ts, types)
    del keep
    items, item_index, item_table = _index_kept_items(item, log.item_ids, item_index)
    del item
    # Raw user ids for the codes still present (group's users are the present codes in order).
    raw_users = log.user_ids.gather(present[user_codes])

    say("sessions and split")
    sessions = core.sessionize(offsets, ts, params.session_gap)
    train_end, valid_end, split_info = split_ends(offsets, ts, params)
    lens = np.diff(offsets)
    type_names = list(log.type_names) if types is not None else []
    manifest = _manifest(source, n_in, params, dropped, lens, item_index.n_items, sessions, split_info, type_names)
    say(f"writing {out}")
    return write_data_dir(
        out,
        items=items,
        ts=ts,
        offsets=offsets,
        sessions=sessions,
        train_end=train_end,
        valid_end=valid_end,
        types=types,
        item_table=item_table,
        user_table=_user_table(raw_users, lens),
        manifest=manifest,
        force=force,
    )


def _index_kept_items(
    item: np.ndarray, item_ids: pl.Series, item_index: ItemIndex | None
) -> tuple[np.ndarray, ItemIndex, pl.DataFrame | None]:
    """The kept events' item indices 1..N, the ItemIndex that gave them, and the item table the
    dir gets: without `item_index`, items are indexed by their kept counts and the dir gets
    their table; a given (sharded) `item_index` is used as is and the dir gets none."""
    if item_index is None:
        item_index = index_items(np.bincount(item, minlength=len(item_ids)), item_ids)
        item_table: pl.DataFrame | None = item_index.table
    else:
        item_table = None
    return item_index.index_of[item], item_index, item_table


def _user_table(raw_users: pl.Series, lens: np.ndarray) -> pl.DataFrame:
    """users.parquet: each user's index 0..U-1, raw id and number of events."""
    return pl.DataFrame(
        {"index": np.arange(lens.size, dtype=np.int64), "id": raw_users, "events": lens.astype(np.int64)}
    )


def _manifest(
    source: dict[str, Any],
    n_in: int,
    params: PrepParams,
    dropped: dict[str, int],
    lens: np.ndarray,
    n_items: int,
    sessions: np.ndarray,
    split_info: dict[str, Any],
    type_names: list[str],
) -> dict[str, Any]:
    """The manifest prepare writes (write_data_dir adds the arrays' specs): the input's `source`,
    params, counts, split and event type names. The counts `source` holds (rows_read, else the
    `n_in` events read; dropped_missing) move from it into the counts, next to the events each
    dedupe and filter step `dropped`; `lens` are the users' event counts."""
    source = dict(source)
    counts_info = {
        "events": int(lens.sum()),
        "users": int(lens.size),
        "items": n_items,
        "sessions": int(len(sessions) - 1),
        "types": len(type_names),
        "rows_read": int(source.pop("rows_read", n_in)),
        "dropped_missing": int(source.pop("dropped_missing", 0)),
        **{f"dropped_{k}": v for k, v in dropped.items()},
        "history_len": history_len_summary(lens),
    }
    return {
        "source": source,
        "params": dataclasses.asdict(params),
        "counts": counts_info,
        "split": split_info,
        "types": type_names,
    }


def _kept_events(
    offsets: np.ndarray,
    keep: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    types: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The grouped events that `keep` (E,) bool keeps: (offsets over them, the codes of the users
    still present, item, ts, types); ValueError when none is left."""
    if keep.all():
        lens = np.diff(offsets)
    else:
        lens = _counts_per_user(offsets, keep)  # (U_in,) events left per user
        item, ts = item[keep], ts[keep]
        types = None if types is None else types[keep]
    if item.size == 0:
        raise ValueError("no events are left after the filters (lower --min-item-count / --min-user-len)")
    user_codes = np.flatnonzero(lens > 0)
    kept_offsets = np.zeros(user_codes.size + 1, dtype=np.int64)
    np.cumsum(lens[user_codes], out=kept_offsets[1:])
    return kept_offsets, user_codes, item, ts, types


def history_len_summary(lens: np.ndarray) -> dict[str, float | int]:
    """The manifest's history_len: min, p50, p90, p99 and max of the users' event counts `lens`."""
    q = np.percentile(lens, [50, 90, 99])
    return {"min": int(lens.min()), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": int(lens.max())}


def keep_mask(
    offsets: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    types: np.ndarray | None,
    n_items: int,
    params: PrepParams,
    say: Status,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Which grouped events survive dedupe and filters (E,) bool, and how many each step dropped.

    `allowed` (N,) bool, when given, replaces the item filter: the whole log's item counts
    decided it (sharded prep), so it is applied once, before the user filter."""
    keep = np.ones(len(item), dtype=bool)
    dropped: dict[str, int] = {}
    if params.dedupe:
        say("dropping exact repeats")
        keep &= _first_distinct(offsets, item, ts, types)
        dropped["duplicates"] = int(len(item) - keep.sum())
    if params.dedupe_consecutive:
        say("dropping consecutive repeats")
        dropped["consecutive"] = _drop_consecutive_repeats(offsets, item, keep)

    # Filters on items and users; k-core repeats both to a fixed point.
    n_before = int(keep.sum())
    if allowed is not None:
        keep &= allowed[item]
    _filter(offsets, item, n_items, params, keep, item_filter=allowed is None)
    dropped["filtered"] = n_before - int(keep.sum())
    return keep, dropped


def _first_distinct(offsets: np.ndarray, item: np.ndarray, ts: np.ndarray, types: np.ndarray | None) -> np.ndarray:
    """(E,) bool: whether each grouped event is the first of its exact repeats (same user, time,
    item and type)."""
    user_of = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    cols = {"u": user_of, "t": ts, "i": item}
    if types is not None:
        cols["y"] = types
    return pl.DataFrame(cols).select(pl.struct(pl.all()).is_first_distinct()).to_series().to_numpy()


def _drop_consecutive_repeats(offsets: np.ndarray, item: np.ndarray, keep: np.ndarray) -> int:
    """Clear in `keep` each event whose item equals its user's previous kept event's; how many."""
    # Compare each kept event with the previous *kept* event of the same user.
    idx = np.flatnonzero(keep)
    same = np.zeros(idx.size, dtype=bool)
    same[1:] = (item[idx[1:]] == item[idx[:-1]]) & _same_user(offsets, idx[1:], idx[:-1])
    keep[idx[same]] = False
    return int(same.sum())


def _filter(
    offsets: np.ndarray, item: np.ndarray, n_items: int, params: PrepParams, keep: np.ndarray, *, item_filter: bool
) -> None:
    """Clear in `keep` the events of items with fewer than min_item_count kept events (when
    `item_filter`), then those of users with fewer than min_user_len; with k-core, repeat
    both until neither drops anything (dropping users can push items under the bar)."""
    while True:
        changed = False
        if params.min_item_count > 1 and item_filter:
            counts = np.bincount(item[keep], minlength=n_items)
            bad = counts < params.min_item_count
            hit = keep & bad[item]
            if hit.any():
                keep &= ~hit
                changed = True
        if params.min_user_len > 1:
            lens = _counts_per_user(offsets, keep)
            short = (lens > 0) & (lens < params.min_user_len)
            if short.any():
                ev_short = np.repeat(short, np.diff(offsets))
                keep &= ~ev_short
                changed = True
        if not params.kcore or not changed:
            break


def split_ends(
    offsets: np.ndarray, ts: np.ndarray, params: PrepParams
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(train_end, valid_end, info) of a grouped log: leave-one-out (test = last event,
    validation = second last, for users with >= 3 events) or temporal (first event at or
    after each cutoff); info goes into the manifest's "split"."""
    split_info: dict[str, Any] = {"kind": params.split}
    if params.split == "loo":
        train_end = core.leave_one_out_ends(offsets, 2)
        valid_end = np.minimum(train_end + 1, offsets[1:])
        split_info.update(valid_cutoff=None, test_cutoff=None)
    else:
        assert params.valid_cutoff is not None and params.test_cutoff is not None
        vc, tc = parse_cutoff(params.valid_cutoff, ts), parse_cutoff(params.test_cutoff, ts)
        if vc > tc:
            raise ValueError(f"the validation cutoff ({vc}) is after the test cutoff ({tc})")
        train_end = core.temporal_ends(offsets, ts, vc)
        valid_end = core.temporal_ends(offsets, ts, tc)
        split_info.update(valid_cutoff=vc, test_cutoff=tc)
    has_valid = (train_end < valid_end) & (train_end > offsets[:-1])
    has_test = (valid_end < offsets[1:]) & (valid_end > offsets[:-1])
    split_info.update(
        train_events=int((train_end - offsets[:-1]).sum()),
        valid_targets=int(has_valid.sum()),
        test_targets=int(has_test.sum()),
    )
    if params.split == "temporal" and split_info["test_targets"] == 0:
        raise ValueError(
            f"no user has an event at or after the test cutoff {split_info['test_cutoff']} "
            "with an earlier event before it"
        )
    return train_end, valid_end, split_info


def _same_user(offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether event positions a[i] and b[i] belong to the same user (searchsorted on offsets)."""
    return np.searchsorted(offsets, a, side="right") == np.searchsorted(offsets, b, side="right")


def summary_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows describing a data dir, for the table prep prints on stderr."""
    c, s = manifest["counts"], manifest["split"]
    h = c["history_len"]
    rows = [
        ("rows read", f"{c['rows_read']:,}"),
        ("dropped: missing user/item/time", f"{c['dropped_missing']:,}"),
    ]
    for key, label in (
        ("dropped_duplicates", "exact repeats"),
        ("dropped_consecutive", "consecutive repeats"),
        ("dropped_filtered", "filters"),
    ):
        if key in c and (key != "dropped_filtered" or c[key]):
            rows.append((f"dropped: {label}", f"{c[key]:,}"))
    rows += [
        ("events", f"{c['events']:,}"),
        ("users", f"{c['users']:,}"),
        ("items", f"{c['items']:,}"),
        ("history length p50 / p90 / p99 / max", f"{h['p50']:,.0f} / {h['p90']:,.0f} / {h['p99']:,.0f} / {h['max']:,}"),
        ("sessions", f"{c['sessions']:,}"),
    ]
    if c.get("types"):
        rows.append(("event types", ", ".join(manifest["types"])))
    rows.append(("split", "leave-one-out" if s["kind"] == "loo" else "temporal"))
    if s["kind"] == "temporal":
        rows.append(("cutoffs: valid / test (s)", f"{s['valid_cutoff']} / {s['test_cutoff']}"))
    rows += [
        ("training events", f"{s['train_events']:,}"),
        ("validation / test targets", f"{s['valid_targets']:,} / {s['test_targets']:,}"),
    ]
    return rows


def same_preparation(
    path: str | os.PathLike[str], source: dict[str, Any], params: PrepParams, shards: int | None = None
) -> bool:
    """Whether the data dir at `path` holds `source` prepared with `params` (in `shards` shards, or
    unsharded for None): the same input by content (its sha256, read as the same format with the same
    columns; or the same synthetic settings) and every prep parameter the same, so preparing it again
    would write the same dir. The input's path may differ (a moved or copied file)."""
    try:
        manifest = read_manifest(Path(path))
    except DataDirError:
        return False
    info = manifest.get("shards")
    count = info.get("count") if isinstance(info, dict) else None
    if count != shards or not isinstance(manifest.get("source"), dict):
        return False

    def content(src: dict[str, Any]) -> Any:
        return json.loads(json.dumps({k: v for k, v in src.items() if k != "path"}))  # as the manifest holds it

    return content(manifest["source"]) == content(source) and manifest.get("params") == dataclasses.asdict(params)


# ---------------------------------------------------------------------------------------------
# Synthetic data dirs


def synthetic_source(cfg: synthetic.SyntheticConfig) -> dict[str, Any]:
    """The manifest's `source` of a synthetic log: the generator's settings."""
    return {"synthetic": cfg.to_dict(), "format": "synthetic"}


def synthetic_log(**params: Any) -> tuple[Log, dict[str, Any]]:
    """The synthetic generator's log (SyntheticConfig fields as params) and its manifest source."""
    cfg = synthetic.SyntheticConfig(**params)
    # Blocks as generated (each in time order): group() orders by (user, time) anyway, and
    # a user's times are distinct, so this gives the same dir as generate()'s global order.
    parts = list(synthetic.chunks(cfg))
    user, item, ts = (np.concatenate([part[k] for part in parts]) for k in range(3))
    del parts
    # Raw ids are 1..users / 1..items; codes are raw - 1, which keeps raw-id order. Users
    # or items that never occur are fine: prepare() drops them.
    log = Log(
        user=(user - 1).astype(np.int64),
        item=(item - 1).astype(np.int64),
        ts=ts,
        types=None,
        user_ids=pl.Series("id", np.arange(1, cfg.users + 1, dtype=np.int64)),
        item_ids=pl.Series("id", np.arange(1, cfg.items + 1, dtype=np.int64)),
    )
    return log, synthetic_source(cfg)


def prepare_synthetic(
    out: str | os.PathLike[str],
    params: PrepParams | None = None,
    *,
    force: bool = False,
    status: Status | None = None,
    **synthetic_params: Any,
) -> Path:
    """Generate a synthetic log (SyntheticConfig fields, e.g. users=2000, items=1000, seed=0)
    and write it as a data dir; prep.py --synthetic and train.py's data/demo both call this."""
    say = status or (lambda _msg: None)
    say("generating the synthetic log")
    log, source = synthetic_log(**synthetic_params)
    return prepare(log, out, params or PrepParams(), source, force=force, status=status)
