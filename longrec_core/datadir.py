"""The data dir format: its files, loading and checking them, writing them. The one owner.

One event array grouped by user, splits as pointers, and a checked manifest (DESIGN.md, "Data
dir"; docs/GUIDE.md, "The data dir"). E events, U users, N items, S sessions, T event types:

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

A sharded data dir (docs/SCALE.md; `longrec_core.shards` decides what goes in it) holds the same
users in several data dirs that share one item index:

    manifest.json  format_version, shards {count, dirs, by}, source, params, counts and split
                   summed over the shards, types, and the sha256 of items.parquet
    items.parquet  the one item table (index 1..N by descending count over the whole log)
    shard-00000/   a complete data dir of the users of shard 0; its manifest counts the global
    shard-00001/   N items, and it has no items.parquet
    ...            (an assembled dir, prep.py --assemble, lists its shard dirs by their own names)

`load_data_dir()` memory-maps either back and checks it; `write_data_dir()` and
`write_shard_root()` write them for the prep pipeline (`longrec_core.prepare`, `.shards`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from longrec_core.cli import atomic_dir, atomic_write

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Every array, in the manifest's order, and its dtype; each is stored as NAME.npy except the
# split ends, which share split.npz.
ARRAYS = {
    "items": np.int32,  # (E,)
    "ts": np.int64,  # (E,)
    "offsets": np.int64,  # (U+1,)
    "sessions": np.int64,  # (S+1,)
    "train_end": np.int64,  # (U,)
    "valid_end": np.int64,  # (U,)
    "types": np.int8,  # (E,), only when the source has event types
}
OPTIONAL_ARRAYS = ("types",)
EVENT_ARRAYS = ("items", "ts", "types")  # one entry per event
OFFSET_ARRAYS = ("offsets", "sessions")  # positions in the event arrays, one more than their rows
SPLIT_ENDS = ("train_end", "valid_end")  # positions in the event arrays, one per user
SMALL_ARRAYS = ("offsets", "train_end", "valid_end")  # O(U): hashed on every load
SPLIT_FILE = "split.npz"
ITEM_TABLE = "items.parquet"
USER_TABLE = "users.parquet"
TABLES = {"items": ITEM_TABLE, "users": USER_TABLE}  # the manifest's name of each table: its file
_SHARD_PREFIX, _SHARD_DIGITS = "shard-", 5  # shard k of a sharded dir: shard-00000, shard-00001, ...
_HASH_CHUNK = 1 << 24  # bytes per hashlib update


def array_file(name: str) -> str:
    """The file of the array `name` inside a data dir."""
    return SPLIT_FILE if name in SPLIT_ENDS else f"{name}.npy"


# Every file a data dir may hold (a sharded dir's root: some of them, and its shard dirs).
DATA_DIR_FILES = frozenset({MANIFEST, *TABLES.values(), *(array_file(name) for name in ARRAYS)})


def shard_dir_name(k: int) -> str:
    """The dir of shard k inside a sharded data dir that prep.py --shards writes."""
    return f"{_SHARD_PREFIX}{k:0{_SHARD_DIGITS}d}"


def _is_shard_dir_name(name: str) -> bool:
    """Whether `name` is a name shard_dir_name gives."""
    return re.fullmatch(rf"{re.escape(_SHARD_PREFIX)}\d{{{_SHARD_DIGITS}}}", name) is not None


def foreign_entries(path: str | os.PathLike[str]) -> list[Path]:
    """What the (sharded) data dir at `path` holds beyond data-dir files and its shard dirs, in
    name order (replacing the dir would delete them)."""
    foreign = []
    for entry in sorted(Path(path).iterdir()):
        if _is_shard_dir_name(entry.name) and entry.is_dir() and not entry.is_symlink():
            foreign += foreign_entries(entry)
        elif entry.name not in DATA_DIR_FILES:
            foreign.append(entry)
    return foreign


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
        if spec["file"] == SPLIT_FILE:
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


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the data dir `path`, of this code's format version (DataDirError if it has none)."""
    path = Path(path)
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


def _load_arrays(path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every array the manifest lists (event arrays memory-mapped), each of its dtype and shape."""
    try:
        specs: dict[str, dict[str, Any]] = manifest["arrays"]
        split_file = path / SPLIT_FILE
        try:
            with np.load(split_file, allow_pickle=False) as z:  # O(U): read into memory
                split = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise _damaged_file(path, split_file.name, e) from None
        arrays = {name: _load_array(path, name, spec, split) for name, spec in specs.items()}
        for name in [n for n in ARRAYS if n not in OPTIONAL_ARRAYS]:
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
    manifest = read_manifest(path)
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
    table = pl.read_parquet(Path(path) / ITEM_TABLE, columns=["index", "id"])
    return table.sort("index")["id"]


def user_ids(path: str | os.PathLike[str]) -> pl.Series:
    """The raw id of every user index 0..U-1 of a data dir (users.parquet), numbered across the shards
    in order for a sharded dir, as load_data_dir numbers them."""
    path = Path(path)
    manifest = read_manifest(path)
    info = manifest.get("shards")
    dirs = [path / d for d in info["dirs"]] if isinstance(info, dict) else [path]
    tables = [pl.read_parquet(d / USER_TABLE, columns=["index", "id"]).sort("index")["id"] for d in dirs]
    return pl.concat(tables) if len(tables) > 1 else tables[0]


# Sharded data dirs (written by longrec_core.shards): load_data_dir reads a sharded dir through
# load_shards, and each shard as a data dir.


def shard_count(path: str | Path) -> int:
    """Shards of a sharded data dir; 0 for an ordinary one (or anything that is not a sharded dir)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return 0
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    return int(shards["count"]) if isinstance(shards, dict) else 0


def load_shards(path: str | Path, which: Sequence[int] | None = None, verify: bool = False) -> DataDir:
    """The shards `which` (default all) of a sharded data dir as one DataDir over their users.

    One shard is memory-mapped as it is; several are concatenated in memory (offsets and split
    ends shifted), so a rank that should map rather than copy reads exactly one shard.
    """
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    dirs = _shard_dirs(path, manifest, which)
    n_items = int(manifest["counts"]["items"])
    parts = (_load_shard(path, k, d, n_items, verify) for k, d in dirs.items())  # one at a time
    if len(dirs) == 1:
        return dataclasses.replace(next(parts), path=path, manifest=manifest)
    return _concatenated(path, manifest, list(dirs.values()), parts)


def _shard_dirs(path: Path, manifest: dict[str, Any], which: Sequence[int] | None) -> dict[int, Path]:
    """{k: dir of shard k} for the shards `which` (default all) of the sharded dir at `path`,
    after checking that its manifest lists them and its root holds the item table."""
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
    if not (path / ITEM_TABLE).is_file():
        raise DataDirError(f"{path} is damaged: {ITEM_TABLE} is missing")
    return {k: path / info["dirs"][k] for k in which}


def _load_shard(path: Path, k: int, shard: Path, n_items: int, verify: bool) -> DataDir:
    """Shard k (the data dir `shard`) of the sharded dir `path`, which counts `n_items` items."""
    part = load_data_dir(shard, verify=verify)
    if part.n_items != n_items:
        raise DataDirError(f"{path} is damaged: shard {k} has {part.n_items:,} items, the root {n_items:,}")
    return part


def _concatenated(path: Path, manifest: dict[str, Any], dirs: list[Path], parts: Iterator[DataDir]) -> DataDir:
    """The shards in `dirs`, loaded one by one from `parts`, as one DataDir: event arrays end to end,
    offset arrays and split ends shifted by the events of the shards before."""
    # Each shard is copied into arrays of the total size and then unmapped, so that beside them at
    # most one shard's memory maps are resident (concatenating all the maps at once holds every
    # shard's pages as well: twice the events at the peak).
    specs = [read_manifest(d)["arrays"] for d in dirs]
    names = [n for n in (*EVENT_ARRAYS, *OFFSET_ARRAYS, *SPLIT_ENDS) if n in specs[0]]  # types if the log has them
    out = {
        n: np.empty(
            sum(s[n]["shape"][0] - (n in OFFSET_ARRAYS) for s in specs) + (n in OFFSET_ARRAYS),
            dtype=specs[0][n]["dtype"],
        )
        for n in names
    }
    filled = dict.fromkeys(names, 0)
    base = 0  # events of the shards copied so far
    for part in parts:
        for n in names:
            a = getattr(part, n)
            a = a[:-1] + base if n in OFFSET_ARRAYS else a + base if n in SPLIT_ENDS else a
            out[n][filled[n] : filled[n] + len(a)] = a
            filled[n] += len(a)
        base += part.n_events
        del part, a  # unmaps the shard
    for n in OFFSET_ARRAYS:
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
    the hash, dtype and shape of every array and table. A shard of a sharded dir has no
    `item_table` (the sharded root holds the one item table).
    """
    out = Path(out)
    given = {
        "items": items,
        "ts": ts,
        "offsets": offsets,
        "sessions": sessions,
        "train_end": train_end,
        "valid_end": valid_end,
        "types": types,
    }
    arrays = {name: np.ascontiguousarray(a, dtype=ARRAYS[name]) for name, a in given.items() if a is not None}
    tables = {"items": item_table, "users": user_table}
    with atomic_dir(out, force, marker=MANIFEST) as tmp:
        specs = _write_arrays(tmp, arrays)
        table_specs = {name: _write_table(tmp, name, t) for name, t in tables.items() if t is not None}
        full = {"format_version": FORMAT_VERSION, **manifest, "arrays": specs, "tables": table_specs}
        (tmp / MANIFEST).write_text(_manifest_text(full))
    return out


def _write_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Save `arrays` (contiguous, of their dtypes) into `folder`; the manifest's spec of each."""
    specs: dict[str, dict[str, Any]] = {}
    for name, a in arrays.items():
        file = array_file(name)
        if file != SPLIT_FILE:
            np.save(folder / file, a)
        specs[name] = {"file": file, "dtype": str(a.dtype), "shape": list(a.shape), "sha256": _array_sha256(a)}
    np.savez(folder / SPLIT_FILE, **{name: arrays[name] for name in SPLIT_ENDS})
    return specs


def _write_table(folder: Path, name: str, table: pl.DataFrame) -> dict[str, Any]:
    """Write the table `name` ("items" or "users") into `folder`; the manifest's spec of it."""
    file = TABLES[name]
    table.write_parquet(folder / file)
    return _table_spec(folder, name, table)


def _table_spec(folder: Path, name: str, table: pl.DataFrame) -> dict[str, Any]:
    """The manifest's entry for the table `name` as written in `folder`: its file, rows and hash."""
    file = TABLES[name]
    return {"file": file, "rows": table.height, "sha256": file_sha256(folder / file)}


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def write_shard_root(
    root: str | os.PathLike[str], dirs: list[str], by: str, manifest: dict[str, Any], item_table: pl.DataFrame
) -> None:
    """Make `root`, which holds the shard data dirs `dirs`, a sharded data dir: its item table, then
    its manifest, each written atomically, the manifest last, so that the dir is a sharded dir only
    once it is whole. `manifest` holds source, params, counts, split and types; this adds
    format_version, the shards (their count, `dirs`, and `by`: how users were assigned to them)
    and the item table's hash."""
    root = Path(root)
    with atomic_write(root / ITEM_TABLE) as tmp:
        item_table.write_parquet(tmp)
    full = {
        "format_version": FORMAT_VERSION,
        "shards": {"count": len(dirs), "dirs": dirs, "by": by},
        **manifest,
        "tables": {"items": _table_spec(root, "items", item_table)},
    }
    with atomic_write(root / MANIFEST) as tmp:
        tmp.write_text(_manifest_text(full))
