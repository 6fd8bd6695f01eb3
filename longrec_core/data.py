"""The data dir: one event array grouped by user, splits as pointers, and a checked manifest.

Layout (README.md, "A data dir"); E events, U users, N items, S sessions, T event types:

    items.npy      int32 (E,)   item index 1..N (0 = padding, never stored), by user then time
    ts.npy         int64 (E,)   event time in seconds (an ordinal when the source has only order)
    offsets.npy    int64 (U+1,) user u's events are [offsets[u], offsets[u+1])
    types.npy      int8  (E,)   event type 1..T (0 = padding); only when the source has types
    sessions.npy   int64 (S+1,) session offsets over the same event array (never cross users)
    split.npz      train_end, valid_end int64 (U,): training uses events before train_end[u];
                   validation target at train_end[u] if train_end[u] < valid_end[u]; test target
                   at valid_end[u] if valid_end[u] < offsets[u+1]
    items.parquet  index (1..N, by descending count; ties by raw id), id (raw), count
    users.parquet  index (0..U-1, by raw id), id (raw), events
    manifest.json  format_version, source, params, counts, split, types, and a sha256 of
                   every array's data and of each table file

`prepare()` turns a coded log (any order) into a data dir; the readers (`longrec_core.readers`,
for prep.py) and `prepare_synthetic()` (also used by train.py for data/demo) both go through it, so the
same log always gives the same dir. `load_data_dir()` memory-maps it back and checks it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import longrec_core as core
from longrec_core import synthetic
from longrec_core.choices import FILTER_SEEN_CHOICES
from longrec_core.cli import atomic_dir

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EVENT_ARRAYS = {"items": np.int32, "ts": np.int64, "types": np.int8}  # (E,) each
SMALL_ARRAYS = ("offsets", "train_end", "valid_end")  # O(U): hashed on every load
_HASH_CHUNK = 1 << 24  # bytes per hashlib update

_EMPTY = np.zeros(0, dtype=np.int64)
Status = Callable[[str], None]  # reports a stage ("grouping 1,000,000 events") to the caller


class DataDirError(ValueError):
    """A data dir that is missing, truncated, edited, or from another format version."""


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class DataDir:
    """A loaded data dir; event arrays are read-only memory maps."""

    path: Path
    items: np.ndarray  # int32 (E,)
    ts: np.ndarray  # int64 (E,)
    offsets: np.ndarray  # int64 (U+1,)
    types: np.ndarray | None  # int8 (E,), or None when the source has no event types
    sessions: np.ndarray  # int64 (S+1,)
    train_end: np.ndarray  # int64 (U,)
    valid_end: np.ndarray  # int64 (U,)
    manifest: dict[str, Any]

    @property
    def n_items(self) -> int:
        return int(self.manifest["counts"]["items"])

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def n_types(self) -> int:
        return len(self.manifest.get("types", []))

    def eval_targets(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(users, end) of every user with a `split` ("valid" | "test") target and at least one
        event before it; the target is items[end], the history is the events before end.

        The history condition only bites on temporal splits, where a user's first event can
        fall after the cutoff (nothing to condition on); leave-one-out ends never allow it.
        """
        if split == "valid":
            end, has = self.train_end, self.train_end < self.valid_end
        elif split == "test":
            end, has = self.valid_end, self.valid_end < self.offsets[1:]
        else:
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        users = np.flatnonzero(has & (end > self.offsets[:-1]))
        return users, end[users]

    def training_item_counts(self) -> np.ndarray:
        """float64 (N+1,) how often each item occurs before the users' training ends (index 0 =
        padding, 0): the popularity sampler must not see validation or test targets."""
        _, idx = history_events(self.offsets, np.arange(self.n_users), self.train_end)
        return np.bincount(self.items[idx], minlength=self.n_items + 1).astype(np.float64)

    def repeat_target_share(self, max_users: int = 100_000, seed: int = 0) -> float:
        """Share of validation and test targets whose item the user has already consumed before it.

        Zero means a seen item can never be a target (ml-1m, Amazon: one rating per user and item),
        so removing seen items from the competitors is the literature's protocol and loses nothing;
        above zero, repeats are legitimate targets. Looks at a seeded sample of at most `max_users`
        targets per split, so the answer costs about one pass over those users' histories.
        """
        hits = total = 0
        rng = np.random.default_rng(seed)
        for split in ("valid", "test"):
            users, end = self.eval_targets(split)
            if len(users) > max_users:
                pick = np.sort(rng.choice(len(users), max_users, replace=False))
                users, end = users[pick], end[pick]
            for lo in range(0, len(users), 4096):
                e = end[lo : lo + 4096]
                rows, idx = history_events(self.offsets, users[lo : lo + 4096], e)
                seen = self.items[idx] == self.items[e][rows]  # (P,) the target already consumed
                hits += int(np.count_nonzero(np.bincount(rows, weights=seen, minlength=len(e))))
                total += len(e)
        return hits / total if total else 0.0


def history_events(offsets: np.ndarray, users: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, index), each int64 (P,): the events [offsets[u], end[i]) of every users[i] = u, flattened
    in order; rows[j] = i says whose history event index[j] is (a position in the event array)."""
    begin = np.asarray(offsets)[users]
    lens = np.asarray(end) - begin  # (B,) history lengths
    rows = np.repeat(np.arange(len(lens)), lens)
    return rows, np.arange(len(rows)) + (begin - (np.cumsum(lens) - lens))[rows]


FINGERPRINT_KEYS = ("format_version", "source", "params", "counts", "split", "types")


def fingerprint(data: DataDir) -> str:
    """What data a data dir holds, as a sha256: its source (the input's hash, or the synthetic
    generator's settings), every prep setting, the counts, the split and the item numbering (the
    hash of items.parquet). Not how it is laid out: one dir and its --shards version of the same log
    share it. A run records it at training, and eval.py checks that it ranks on the same data; that
    the arrays are those the manifest describes is the loader's check (their hashes)."""
    m = data.manifest
    what = {k: m.get(k) for k in FINGERPRINT_KEYS} | {"items": m.get("tables", {}).get("items", {}).get("sha256")}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def resolve_filter_seen(choice: str, data: DataDir) -> bool:
    """Whether evaluation drops the user's already-seen items from the competitors.

    "yes"/"no" force it; "auto" filters exactly when no validation or test target repeats a seen
    item (`DataDir.repeat_target_share` is 0): the published protocol for data without repeat
    consumption (ml-1m, Amazon), and unfiltered where a seen item can be the right answer.
    """
    if choice not in FILTER_SEEN_CHOICES:
        raise ValueError(f"filter_seen must be one of {', '.join(FILTER_SEEN_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return data.repeat_target_share() == 0.0
    return choice == "yes"


def _array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's data (C order), streamed so a memory map is never read whole."""
    h = hashlib.sha256()
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    for i in range(0, flat.size, _HASH_CHUNK):
        h.update(flat[i : i + _HASH_CHUNK])
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (the manifest's hash of a table file or of prep's input)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _damaged_file(path: Path, file: str, e: BaseException) -> DataDirError:
    """The error for a file of the data dir `path` that NumPy cannot read: which file, why in a few
    words (not NumPy's advice to load an untrusted file unsafely), and what to do."""
    if isinstance(e, FileNotFoundError):
        why = "it is missing"
    elif "pickle" in str(e) or isinstance(e, zipfile.BadZipFile):
        why = "it is not a NumPy array file"  # np.load takes unknown bytes for a pickle
    else:
        why = f"it is truncated or not a NumPy array file ({type(e).__name__})"
    return DataDirError(f"{path} is damaged: {file} cannot be read ({why}); re-run prep.py to make the data dir again")


def _load_array(path: Path, name: str, spec: dict[str, Any], split: Any) -> np.ndarray:
    where = path / spec["file"]
    try:
        if spec["file"] == "split.npz":
            a = split[name]
        else:
            a = np.load(where, mmap_mode="r", allow_pickle=False)
    except KeyError:
        raise DataDirError(f"{path} is damaged: {spec['file']} holds no {name} array; re-run prep.py") from None
    except (OSError, ValueError, EOFError) as e:  # missing, truncated (mmap longer than file), not .npy
        raise _damaged_file(path, spec["file"], e) from None
    if str(a.dtype) != spec["dtype"] or list(a.shape) != spec["shape"]:
        raise DataDirError(
            f"{path} is damaged: {name} is {a.dtype}{list(a.shape)}, the manifest says {spec['dtype']}{spec['shape']}"
        )
    return a


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the data dir `path`, of this code's format version."""
    if not path.is_dir():
        raise DataDirError(f"{path} is not a data dir: {'it is a file' if path.exists() else 'no such directory'}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataDirError(f"{path} is not a data dir: it has no {MANIFEST} (make one with scripts/prep.py)") from None
    except (OSError, ValueError) as e:
        raise DataDirError(f"{path} is damaged: {MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise DataDirError(
            f"{path} has data dir format version {version}, this code reads {FORMAT_VERSION}; rerun prep.py"
        )
    return manifest


def same_preparation(
    path: str | os.PathLike[str], source: dict[str, Any], params: PrepParams, shards: int | None = None
) -> bool:
    """Whether the data dir at `path` holds `source` prepared with `params` (in `shards` shards, or
    unsharded for None): the same input by content (its sha256, read as the same format with the same
    columns; or the same synthetic settings) and every prep parameter the same, so preparing it again
    would write the same dir. The input's path may differ (a moved or copied file)."""
    try:
        manifest = _read_manifest(Path(path))
    except DataDirError:
        return False
    info = manifest.get("shards")
    count = info.get("count") if isinstance(info, dict) else None
    if count != shards or not isinstance(manifest.get("source"), dict):
        return False

    def content(src: dict[str, Any]) -> Any:
        return json.loads(json.dumps({k: v for k, v in src.items() if k != "path"}))  # as the manifest holds it

    return content(manifest["source"]) == content(source) and manifest.get("params") == dataclasses.asdict(params)


def _load_arrays(path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every array the manifest lists (event arrays memory-mapped), each of its dtype and shape."""
    try:
        specs: dict[str, dict[str, Any]] = manifest["arrays"]
        split_file = path / "split.npz"
        try:
            with np.load(split_file, allow_pickle=False) as z:  # O(U): read into memory
                split = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise _damaged_file(path, split_file.name, e) from None
        arrays = {name: _load_array(path, name, spec, split) for name, spec in specs.items()}
        for name in ("items", "ts", "offsets", "sessions", "train_end", "valid_end"):
            if name not in arrays:
                raise DataDirError(f"{path} is damaged: the manifest lists no {name} array")
    # a truncated or overwritten split.npz raises EOFError or BadZipFile
    except (KeyError, TypeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DataDirError):
            raise
        raise DataDirError(f"{path} is damaged: cannot read its arrays ({type(e).__name__}: {e})") from None
    return arrays


def _check_hashes(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray], verify: bool) -> None:
    """The O(U) arrays against their hashes and the tables' presence; with `verify`, everything's hash."""
    specs = manifest["arrays"]
    for name in [n for n in specs if n in SMALL_ARRAYS or verify]:
        if _array_sha256(arrays[name]) != specs[name]["sha256"]:
            raise DataDirError(f"{path} is damaged: {name} does not match its hash in the manifest")
    for spec in manifest.get("tables", {}).values():
        file = path / spec["file"]
        if not file.is_file():
            raise DataDirError(f"{path} is damaged: {spec['file']} is missing")
        if verify and file_sha256(file) != spec["sha256"]:
            raise DataDirError(f"{path} is damaged: {spec['file']} does not match its hash in the manifest")


def _check_ranges(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Offsets partition the events, split ends lie within their users, item ids within 1..N."""
    off, train_end, valid_end = arrays["offsets"], arrays["train_end"], arrays["valid_end"]
    n_events = len(arrays["items"])
    if len(off) < 1 or off[0] != 0 or off[-1] != n_events or np.any(np.diff(off) < 0):
        raise DataDirError(f"{path} is damaged: offsets do not partition the {n_events:,} events")
    if not (np.all(off[:-1] <= train_end) and np.all(train_end <= valid_end) and np.all(valid_end <= off[1:])):
        raise DataDirError(f"{path} is damaged: split ends lie outside their users' events")
    n_items = manifest.get("counts", {}).get("items")
    if n_items is None:
        raise DataDirError(f"{path} is damaged: the manifest has no item count")
    # Unlike the small arrays, the events are not hashed on every load (seconds per GB), but an
    # item id outside 1..N would crash training or evaluation later: a min and a max check the range.
    items = arrays["items"]
    if n_events and (int(items.min()) < 1 or int(items.max()) > n_items):
        raise DataDirError(f"{path} is damaged: items.npy holds ids outside 1..{n_items:,}")


def load_data_dir(path: str | os.PathLike[str], verify: bool = False) -> DataDir:
    """Memory-map a data dir and check it against its manifest; raise DataDirError if it fails.

    Always checked: format version, every array's presence, dtype and shape (a truncated
    file fails here), the sha256 of the O(U) arrays (offsets, split ends), the consistency
    of offsets and split ends, and the table files' presence. With `verify=True` also the
    sha256 of the event arrays and tables (reads everything; seconds per GB).
    """
    path = Path(path)
    manifest = _read_manifest(path)
    if "shards" in manifest:  # a sharded dir (longrec_core.shards): all its shards as one
        return load_shards(path, verify=verify)
    arrays = _load_arrays(path, manifest)
    _check_hashes(path, manifest, arrays, verify)
    _check_ranges(path, manifest, arrays)
    return DataDir(
        path=path,
        items=arrays["items"],
        ts=arrays["ts"],
        offsets=arrays["offsets"],
        types=arrays.get("types"),
        sessions=arrays["sessions"],
        train_end=arrays["train_end"],
        valid_end=arrays["valid_end"],
        manifest=manifest,
    )


def item_ids(path: str | os.PathLike[str]) -> pl.Series:
    """The raw id of every item index 1..N of a data dir (items.parquet; a sharded dir's root holds
    it): element i is the raw id of index i + 1."""
    table = pl.read_parquet(Path(path) / "items.parquet", columns=["index", "id"])
    return table.sort("index")["id"]


def user_ids(path: str | os.PathLike[str]) -> pl.Series:
    """The raw id of every user index 0..U-1 of a data dir (users.parquet), numbered across the shards
    in order for a sharded dir, as load_data_dir numbers them."""
    path = Path(path)
    manifest = _read_manifest(path)
    info = manifest.get("shards")
    dirs = [path / d for d in info["dirs"]] if isinstance(info, dict) else [path]
    tables = [pl.read_parquet(d / "users.parquet", columns=["index", "id"]).sort("index")["id"] for d in dirs]
    return pl.concat(tables) if len(tables) > 1 else tables[0]


# Sharded data dirs (written by longrec_core.shards): read here, beside load_data_dir, which
# reads a sharded dir through load_shards and each shard as a data dir.


def shard_count(path: str | Path) -> int:
    """Shards of a sharded data dir; 0 for an ordinary one (or anything that is not a sharded dir)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return 0
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    return int(shards["count"]) if isinstance(shards, dict) else 0


# How load_shards joins shards: event arrays end to end, offset arrays (one more entry than their
# rows) and split ends shifted by the events before the shard.
_CONCATENATED = ("items", "ts", "types")
_OFFSETS = ("offsets", "sessions")
_SPLIT_ENDS = ("train_end", "valid_end")


def load_shards(path: str | Path, which: Sequence[int] | None = None, verify: bool = False) -> DataDir:
    """The shards `which` (default all) of a sharded data dir as one DataDir over their users.

    One shard is memory-mapped as it is; several are concatenated in memory (offsets and split
    ends shifted), so a rank that should map rather than copy reads exactly one shard.
    """
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    info = manifest.get("shards")
    if not isinstance(info, dict):
        raise DataDirError(f"{path} is not a sharded data dir (its manifest has no shards)")
    n = int(info["count"])
    if not isinstance(info.get("dirs"), list) or len(info["dirs"]) != n:
        raise DataDirError(f"{path} is damaged: its manifest counts {n} shards but does not list {n} shard dirs")
    which = list(range(n)) if which is None else list(which)
    bad = [k for k in which if not 0 <= k < n]
    if bad or not which:
        raise DataDirError(f"{path} has shards 0..{n - 1}; cannot read shard(s) {bad or which}")
    if not (path / "items.parquet").is_file():
        raise DataDirError(f"{path} is damaged: items.parquet is missing")
    n_items = int(manifest["counts"]["items"])
    dirs = [path / info["dirs"][k] for k in which]

    def checked(k: int, d: Path) -> DataDir:
        part = load_data_dir(d, verify=verify)
        if part.n_items != n_items:
            raise DataDirError(f"{path} is damaged: shard {k} has {part.n_items:,} items, the root {n_items:,}")
        return part

    if len(which) == 1:
        return dataclasses.replace(checked(which[0], dirs[0]), path=path, manifest=manifest)
    # Several shards are copied one at a time into arrays of the total size, so that beside them
    # at most one shard's memory maps are resident (concatenating all the maps at once holds every
    # shard's pages as well: twice the events at the peak).
    specs = [_read_manifest(d)["arrays"] for d in dirs]
    names = [n for n in (*_CONCATENATED, *_OFFSETS, *_SPLIT_ENDS) if n in specs[0]]  # types if the log has them
    out = {
        n: np.empty(
            sum(s[n]["shape"][0] - (n in _OFFSETS) for s in specs) + (n in _OFFSETS), dtype=specs[0][n]["dtype"]
        )
        for n in names
    }
    filled = dict.fromkeys(names, 0)
    base = 0  # events of the shards copied so far
    for k, d in zip(which, dirs):
        part = checked(k, d)
        for n in names:
            a = getattr(part, n)
            a = a[:-1] + base if n in _OFFSETS else a + base if n in _SPLIT_ENDS else a
            out[n][filled[n] : filled[n] + len(a)] = a
            filled[n] += len(a)
        base += part.n_events
        del part, a  # unmaps the shard
    for n in _OFFSETS:
        out[n][-1] = base
    return DataDir(path=path, types=out.get("types"), manifest=manifest, **{n: out[n] for n in names if n != "types"})


# ---------------------------------------------------------------------------------------------
# Writing


def write_data_dir(
    out: str | os.PathLike[str],
    *,
    items: np.ndarray,
    ts: np.ndarray,
    offsets: np.ndarray,
    sessions: np.ndarray,
    train_end: np.ndarray,
    valid_end: np.ndarray,
    types: np.ndarray | None,
    item_table: pl.DataFrame | None,
    user_table: pl.DataFrame,
    manifest: dict[str, Any],
    force: bool = False,
) -> Path:
    """Write a data dir atomically (temporary sibling, renamed at the end) and return its path.

    `manifest` holds source, params, counts, split and types; this adds format_version and
    the hash, dtype and shape of every array and table.
    """
    out = Path(out)
    arrays: dict[str, np.ndarray] = {
        "items": np.ascontiguousarray(items, dtype=np.int32),
        "ts": np.ascontiguousarray(ts, dtype=np.int64),
        "offsets": np.ascontiguousarray(offsets, dtype=np.int64),
        "sessions": np.ascontiguousarray(sessions, dtype=np.int64),
        "train_end": np.ascontiguousarray(train_end, dtype=np.int64),
        "valid_end": np.ascontiguousarray(valid_end, dtype=np.int64),
    }
    if types is not None:
        arrays["types"] = np.ascontiguousarray(types, dtype=np.int8)
    specs: dict[str, dict[str, Any]] = {}
    tables: dict[str, dict[str, Any]] = {}
    with atomic_dir(out, force, marker=MANIFEST) as tmp:
        for name, a in arrays.items():
            file = "split.npz" if name in ("train_end", "valid_end") else f"{name}.npy"
            if file.endswith(".npy"):
                np.save(tmp / file, a)
            specs[name] = {"file": file, "dtype": str(a.dtype), "shape": list(a.shape), "sha256": _array_sha256(a)}
        np.savez(tmp / "split.npz", train_end=arrays["train_end"], valid_end=arrays["valid_end"])
        for name, table in (("items", item_table), ("users", user_table)):
            if table is None:  # a shard: the sharded root holds the item table
                continue
            file = f"{name}.parquet"
            table.write_parquet(tmp / file)
            tables[name] = {"file": file, "rows": table.height, "sha256": file_sha256(tmp / file)}
        full = {"format_version": FORMAT_VERSION, **manifest, "arrays": specs, "tables": tables}
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# From a coded log to a data dir


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
