"""Writing sharded data dirs: one log split by user into N data dirs that share one item index.

A log too big to group in memory at once is prepared shard by shard (`prep.py --shards N`), and
data-parallel training reads on each rank only the shards it trains on. The layout, and reading a
sharded dir (`load_shards`, `shard_count`), belong to `longrec_core.datadir`; shard k holds the
users with shard_of(user id) == k.

How prep builds it with memory bounded by one shard, not the log:
1. `ShardSpill` streams the log in batches, appending each event to its shard's spill files
   (raw user id, raw item id, time, type) and counting items by raw id.
2. The item index comes from the whole log's counts. When dedupe or filters change those
   counts, each shard is cleaned once more to count what survives (`_surviving_counts`).
3. Each shard's spill becomes a data dir through the same `prepare.prepare` as an unsharded log,
   with the global item index. Concatenating the shards gives the unsharded dir's users.

Restrictions (exit 2 in prep): integer user and item ids (item ids below 2^31, as a dense id
from an engine's pre-grouping is); no --kcore (it needs the whole log at once); temporal cutoffs
as times, not quantiles. A `user item time` pairs file is not checked for times that go back
within a user, as the unsharded prep checks it (the check needs a user's whole history in file
order); its events are ordered by time like any other log's.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from longrec_core.cli import atomic_dir
from longrec_core.datadir import MANIFEST, load_data_dir, shard_dir_name, write_shard_root
from longrec_core.prepare import (
    ItemIndex,
    Log,
    PrepParams,
    Status,
    dense_codes,
    group_log,
    history_len_summary,
    index_items,
    keep_mask,
    number_types,
    prepare,
    read_item_index,
)
from longrec_core.synthetic import splitmix64

SPILL_COLUMNS = {"user": np.int64, "item": np.int64, "ts": np.int64, "types": np.int8}
MAX_ITEM_ID = 2**31 - 1


def shard_of(user_ids: np.ndarray, n_shards: int) -> np.ndarray:
    """Shard of each integer user id: splitmix64(id) mod n_shards (stable across machines and runs)."""
    return (splitmix64(np.asarray(user_ids).astype(np.uint64)) % np.uint64(n_shards)).astype(np.int64)


class ShardSpill:
    """Append-only per-shard event files under `root`, and item counts by raw id."""

    def __init__(self, root: Path, n_shards: int, with_types: bool) -> None:
        self.root, self.n_shards, self.with_types = root, n_shards, with_types
        root.mkdir(parents=True, exist_ok=True)
        self.columns = [c for c in SPILL_COLUMNS if c != "types" or with_types]
        self.files = {(k, c): open(root / f"{k}.{c}", "wb") for k in range(n_shards) for c in self.columns}
        self.item_counts = np.zeros(0, dtype=np.int64)  # by raw item id
        self.events = 0

    def add(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray, types: np.ndarray | None = None) -> None:
        """Append a batch of events (raw integer ids, int64 seconds)."""
        if len(item) == 0:
            return
        if int(user.min()) < 0:
            raise ValueError("with --shards, user ids must be non-negative integers")
        lo, hi = int(item.min()), int(item.max())
        if lo < 0 or hi > MAX_ITEM_ID:
            raise ValueError(
                f"with --shards, item ids must be integers in 0..{MAX_ITEM_ID} "
                f"(found {lo if lo < 0 else hi}); give items dense ids first"
            )
        if hi >= len(self.item_counts):
            self.item_counts = np.concatenate([self.item_counts, np.zeros(hi + 1 - len(self.item_counts), np.int64)])
        self.item_counts[: hi + 1] += np.bincount(item, minlength=hi + 1)
        shard = shard_of(user, self.n_shards)
        order = np.argsort(shard, kind="stable")  # events of one shard keep their input order
        bounds = np.concatenate([[0], np.cumsum(np.bincount(shard, minlength=self.n_shards))])
        cols = {"user": user, "item": item, "ts": ts, "types": types}
        for c in self.columns:
            a = np.ascontiguousarray(cols[c], dtype=SPILL_COLUMNS[c])[order]
            for k in range(self.n_shards):
                a[bounds[k] : bounds[k + 1]].tofile(self.files[k, c])
        self.events += len(item)

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def read(self, k: int) -> dict[str, np.ndarray]:
        """Shard k's events, in input order."""
        return {c: np.fromfile(self.root / f"{k}.{c}", dtype=SPILL_COLUMNS[c]) for c in self.columns}


def _shard_log(
    spill: ShardSpill,
    k: int,
    item_code: np.ndarray,
    item_ids: pl.Series,
    type_lut: np.ndarray | None,
    type_names: list[str],
) -> Log:
    ev = spill.read(k)
    if len(ev["user"]) == 0:
        raise ValueError(f"shard {k} of {spill.n_shards} has no events: use fewer --shards")
    user, user_ids = dense_codes(pl.Series("user", ev.pop("user")))
    item = item_code[ev.pop("item")]
    types = None if type_lut is None else type_lut[ev.pop("types")]
    return Log(
        user=user,
        item=item,
        ts=ev.pop("ts"),
        types=types,
        user_ids=user_ids,
        item_ids=item_ids,
        type_names=type_names if types is not None else [],
    )


def _surviving_counts(log: Log, params: PrepParams, allowed: np.ndarray | None) -> np.ndarray:
    """Per item code, the events of this shard that dedupe and filters keep (as `prepare` would)."""
    offsets, _, item, ts, types = group_log(log)
    keep, _ = keep_mask(offsets, item, ts, types, len(log.item_ids), params, lambda _m: None, allowed=allowed)
    return np.bincount(item[keep], minlength=len(log.item_ids))


def prepare_sharded(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
    out: str | Path,
    params: PrepParams,
    n_shards: int,
    source: dict[str, Any],
    *,
    type_names: Sequence[str] = (),
    type_order: Sequence[str] = (),
    read_counts: dict[str, int] | None = None,
    force: bool = False,
    status: Status | None = None,
) -> Path:
    """Write a sharded data dir from `batches` of (user, item, ts, type codes or None) raw events.

    Type codes are 1 + the position of the type's name in `type_names` (the order the reader met
    them; `type_names` may grow while batches are read); the dir numbers them as the unsharded
    prep does (`prepare.number_types`). `read_counts` (rows_read, dropped_missing), filled by the
    reader while the batches are read, goes into the manifest.
    """
    say = status or (lambda _msg: None)
    _check_shardable(n_shards, params)
    out = Path(out)
    with atomic_dir(out, force, marker=MANIFEST) as tmp:
        spill = _spill(batches, tmp / "spill", n_shards, say)
        item_code, item_ids, counts = _item_codes(spill.item_counts)
        type_lut, final_types = number_types(type_names, type_order) if spill.with_types else (None, [])

        def shard_log(k: int) -> Log:
            return _shard_log(spill, k, item_code, item_ids, type_lut, final_types)

        index = _whole_log_index(shard_log, n_shards, counts, item_ids, params, say)
        dirs = [shard_dir_name(k) for k in range(n_shards)]
        manifests, lens = [], []
        for k, name in enumerate(dirs):
            say(f"shard {k + 1}/{n_shards}")
            prepare(shard_log(k), tmp / name, params, {**source, "shard": k, "shards": n_shards}, item_index=index)
            loaded = load_data_dir(tmp / name)
            manifests.append(loaded.manifest)
            lens.append(np.diff(loaded.offsets))
        shutil.rmtree(spill.root)
        _write_root(
            tmp,
            dirs,
            "splitmix64(raw user id) mod count",
            source,
            dataclasses.asdict(params),
            manifests,
            lens,
            index,
            final_types,
            read_counts,
        )
    return out


def _check_shardable(n_shards: int, params: PrepParams) -> None:
    """Refuse what a sharded prep cannot do: it never holds the whole log at once."""
    if n_shards < 1:
        raise ValueError(f"--shards must be >= 1, got {n_shards}")
    if params.kcore:
        raise ValueError(
            "--kcore cannot be used with --shards: a k-core needs the whole log at once "
            "(filter in your engine first, or prep without --shards)"
        )
    for name in ("valid_cutoff", "test_cutoff"):
        v = getattr(params, name)
        if v is not None and str(v).strip().startswith("q"):
            raise ValueError(
                f"with --shards, give --{name.replace('_', '-')} as a time, not a quantile "
                "(a quantile needs every event at once)"
            )


def _spill(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
    root: Path,
    n_shards: int,
    say: Status,
) -> ShardSpill:
    """Every batch appended to its shards' spill files under `root` (closed when it returns)."""
    spill = None
    for user, item, ts, types in batches:
        if spill is None:
            spill = ShardSpill(root, n_shards, with_types=types is not None)
        spill.add(user, item, ts, types)
        say(f"split {spill.events:,} events into {n_shards} shards")
    if spill is None or spill.events == 0:
        raise ValueError("the input has no events")
    spill.close()
    return spill


def _item_codes(item_counts: np.ndarray) -> tuple[np.ndarray, pl.Series, np.ndarray]:
    """Item codes 0..K-1 in raw-id order over the items that occur: (code of each raw id, -1 for
    an absent one; raw id of each code; count of each code), from counts by raw id."""
    present = np.flatnonzero(item_counts)
    item_code = np.full(len(item_counts), -1, dtype=np.int32)
    item_code[present] = np.arange(len(present), dtype=np.int32)
    return item_code, pl.Series("id", present.astype(np.int64)), item_counts[present]


def _whole_log_index(
    shard_log: Callable[[int], Log],
    n_shards: int,
    counts: np.ndarray,
    item_ids: pl.Series,
    params: PrepParams,
    say: Status,
) -> ItemIndex:
    """The item index of the whole log, as the unsharded prep would make it: `counts` (per item
    code, as read) are recounted shard by shard when dedupe or filters change them."""
    allowed = None
    dedupes = params.dedupe or params.dedupe_consecutive
    if dedupes and params.min_item_count > 1:  # the item filter counts after dedupe
        only_dedupe = dataclasses.replace(params, min_item_count=1, min_user_len=1)
        say("counting items after dedupe")
        counts = sum(_surviving_counts(shard_log(k), only_dedupe, None) for k in range(n_shards))
    if params.min_item_count > 1:
        allowed = counts >= params.min_item_count
    if dedupes or params.min_item_count > 1 or params.min_user_len > 1:
        say("counting items that survive dedupe and filters")
        counts = sum(_surviving_counts(shard_log(k), params, allowed) for k in range(n_shards))
    if not counts.any():
        raise ValueError("no events are left after the filters (lower --min-item-count / --min-user-len)")
    return index_items(np.asarray(counts), item_ids)


def _write_root(
    root: Path,
    dirs: list[str],
    by: str,
    source: dict[str, Any],
    params: dict[str, Any],
    manifests: list[dict[str, Any]],
    lens: list[np.ndarray],
    index: ItemIndex,
    types: list[str],
    read_counts: dict[str, int] | None,
) -> None:
    """Make `root` a sharded dir over its shard data dirs `dirs` (users assigned to them `by` a
    rule), with a manifest over the shards' `manifests` and history lengths `lens`."""
    manifest = {
        "source": source,
        "params": params,
        "counts": _summed_counts([m["counts"] for m in manifests], index.n_items, np.concatenate(lens), read_counts),
        "split": _summed_split([m["split"] for m in manifests]),
        "types": types,
    }
    write_shard_root(root, dirs, by, manifest, index.table)


def _summed_counts(
    per_shard: list[dict[str, Any]], n_items: int, lens: np.ndarray, read_counts: dict[str, int] | None
) -> dict[str, Any]:
    """The root's counts: the shards' summed, the global item count, the reader's own counts
    (they saw the log before it was split) and the history lengths over every shard."""
    total: dict[str, Any] = {}
    for c in per_shard:
        for key, v in c.items():
            if isinstance(v, int) and key != "items":
                total[key] = total.get(key, 0) + v
    total["items"] = n_items
    for key in ("rows_read", "dropped_missing"):  # what the reader saw, before the shards
        if read_counts and key in read_counts:
            total[key] = read_counts[key]
    total["types"] = per_shard[0]["types"]
    total["history_len"] = history_len_summary(lens)
    return total


def _summed_split(per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    """The root's split: the shards' kind and cutoffs (the same in every shard), their sums."""
    split = dict(per_shard[0])
    for key in ("train_events", "valid_targets", "test_targets"):
        split[key] = sum(s[key] for s in per_shard)
    return split


def assemble(root: str | Path, item_index: str | Path, status: Status | None = None) -> Path:
    """Make `root` a sharded data dir from the data dirs inside it (sorted by name), each prepared
    with `prep.py --item-index item_index` (on any machine): writes root/items.parquet and the
    root manifest, after checking that every shard has the index's item count."""
    say = status or (lambda _msg: None)
    root = Path(root)
    if (root / MANIFEST).is_file():
        raise ValueError(f"{root} already has a {MANIFEST}: it is a data dir, not a folder of shards")
    dirs = sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []
    if not dirs:
        raise ValueError(f"{root} holds no data dirs to assemble (prep each shard into {root}/NAME first)")
    index = read_item_index(item_index, pl.Series("id", [], dtype=pl.Int64))
    manifests, lens = [], []
    for name in dirs:
        say(f"checking {root / name}")
        d = load_data_dir(root / name)
        if d.n_items != index.n_items:
            raise ValueError(
                f"{root / name} has {d.n_items:,} items, --item-index {item_index} {index.n_items:,}: "
                "prep every shard with that --item-index"
            )
        manifests.append(d.manifest)
        lens.append(np.diff(d.offsets))
    _write_root(
        root,
        dirs,
        "assembled",
        {"assembled": dirs, "item_index": str(Path(item_index).resolve())},
        manifests[0]["params"],
        manifests,
        lens,
        index,
        manifests[0]["types"],
        None,
    )
    return root
