"""Data-core benchmark: group, sessionize, windows and gather on a generated 10^7..10^8-event
log, each beside a plain NumPy copy of the same bytes (the memory-bandwidth floor) and the
best plain NumPy / Polars way to do the same thing, all measured in the same run.

    python bench/core.py                               # 1e7 events, a few minutes on 2 cores
    python bench/core.py --events 1e8                  # the figure in docs/PERFORMANCE.md (24 GiB machine)
    python bench/core.py --only gather --rounds 3      # one op (all its cases)
    python bench/core.py --only group:core,group:floor --threads 1   # single-threaded core
    python bench/core.py --json bench/out/core.json    # also write every figure as JSON

Each measurement runs in a fresh subprocess (`bench/core.py --worker CASE ...`) that loads
its inputs from the cache (np.load, fully in memory), resets its peak-RSS mark, runs the op
--repeats times, and reports seconds, peak RSS above the loaded inputs, and the bytes it
output. All cases run once per round, for --rounds rounds; each reports its best run, so
on a shared machine every case samples the load over the whole run.
Peers are checked to produce exactly the core's output (a hash of every output array).
Figures and ratios are printed; nothing here asserts on time.

Peak RSS is read from /proc/self/status (VmHWM, KiB): unlike getrusage's ru_maxrss it is
per address space, so it does not inherit the parent's high-water mark across exec, and
it can be reset after loading (/proc/self/clear_refs). Elsewhere ru_maxrss is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from memory import cpu_and_cores, peak_rss_bytes, run_fresh_worker, status_bytes

import longrec_core as lc

# Targets each op is marked against: core at most 2x the copy floor; core faster than the best
# peer by at least this factor; peak memory at most 1.1 x (inputs + outputs).
FLOOR_TARGET = 2.0
PEER_TARGET = {"group": 1.5, "sessionize": 1.5, "windows": 5.0, "gather": 5.0}
MEM_TARGET = 1.10
OPS = ("group", "sessionize", "windows", "gather")

# Synthetic log shape (see generate()).
PARETO_ALPHA = 1.1  # history-length tail: P(L > x) = (L_MIN / x) ** alpha, capped at --max-len
L_MIN = 5  # shortest history
YEAR_S = 365 * 86_400  # users start within a year and are active over up to a year
NEW_SESSION_P = 0.1  # share of a user's events that open a new session
IN_SESSION_GAP_S = 30.0  # mean seconds between events inside a session
N_ITEMS = 1_000_000  # catalogue size for the items array (content does not affect speed)

Sink = Callable[..., None]  # receives the output arrays of one call of the op
Run = Callable[[Sink], None]


# ----------------------------------------------------------------------------- data


def generate(d: Path, a: argparse.Namespace) -> None:
    """Write the raw log (users, ts: int64, time-ordered across users) and everything the
    later cases read (grouped ts, items, windows, the gather batches) as .npy under d."""
    rng = np.random.default_rng(a.seed)
    E = a.events
    say(f"generating {E:,} events in {d}")
    # Per-user history lengths: Pareto tail capped at max_len, drawn until they sum to E.
    parts, total = [], 0
    while total < E:
        u = 1.0 - rng.random(1 << 20)  # (0, 1]
        lens = np.minimum(a.max_len, np.floor(L_MIN * u ** (-1.0 / PARETO_ALPHA))).astype(np.int64)
        parts.append(lens)
        total += int(lens.sum())
    lengths = np.concatenate(parts)
    cut = int(np.searchsorted(np.cumsum(lengths), E))  # first user that reaches E
    lengths = lengths[: cut + 1]
    lengths[-1] -= int(lengths.sum()) - E
    lengths = lengths[lengths > 0]
    U = len(lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (U,) first event of each user

    # Event times per user, in per-user order: gaps are short inside a session and long
    # between sessions (spread so that the user's sessions span up to a year).
    useq = np.repeat(np.arange(U, dtype=np.int32), lengths)  # (E,) user of each event
    span = rng.uniform(0.05, 1.0, U) * YEAR_S
    between = (span / np.maximum(1.0, NEW_SESSION_P * lengths))[useq]  # (E,) float64
    gaps = rng.exponential(1.0, E)
    gaps *= np.where(rng.random(E) < NEW_SESSION_P, between, IN_SESSION_GAP_S)
    del between
    steps = np.rint(gaps).astype(np.int64)
    del gaps
    start = rng.integers(0, YEAR_S, U)
    steps[first] = start
    ts_user = np.cumsum(steps)  # a segmented cumsum: subtract each user's running base
    del steps
    ts_user -= np.repeat(ts_user[first] - start, lengths)

    # The raw log: all events in time order, users interleaved, ids shuffled.
    order = np.argsort(ts_user)
    ids = rng.permutation(U).astype(np.int64)
    users = ids[useq[order]]
    del useq, ids
    ts = ts_user[order]
    del ts_user, order
    np.save(d / "users.npy", users)
    np.save(d / "ts.npy", ts)

    # Grouped arrays for the later cases, derived once with the core.
    perm, offsets = lc.group(users, ts)
    del users
    ts_g = ts[perm]
    del ts, perm
    np.save(d / "offsets.npy", offsets)
    np.save(d / "ts_grouped.npy", ts_g)
    # Per-event user column in grouped order: the natural input of a Polars `over`.
    np.save(d / "users_grouped.npy", np.repeat(np.arange(U, dtype=np.int64), np.diff(offsets)))
    n_sessions = len(lc.sessionize(offsets, ts_g, a.gap)) - 1
    del ts_g
    # Item ids 1..N with a log-uniform popularity; int32 as in a data dir.
    items = np.minimum(N_ITEMS, np.floor(N_ITEMS ** rng.random(E))).astype(np.int32)
    np.save(d / "items.npy", items)
    del items
    seq, wstart, wstop = lc.windows(offsets, window=a.window, stride=a.stride)
    del seq
    rows = rng.integers(0, len(wstart), a.batches * a.batch)  # random windows, as in a shuffled epoch
    g_start, g_stop = wstart[rows], wstop[rows]
    np.save(d / "gather_start.npy", g_start)
    np.save(d / "gather_stop.npy", g_stop)
    kept = np.minimum(g_stop - g_start, a.window + 1)
    hist = np.diff(offsets)
    meta = {
        "events": E,
        "users": U,
        "sessions": n_sessions,
        "windows": len(wstart),
        "max_len": a.max_len,
        "seed": a.seed,
        "gap": a.gap,
        "window": a.window,
        "stride": a.stride,
        "batch": a.batch,
        "batches": a.batches,
        "history": {
            "mean": float(hist.mean()),
            "median": float(np.median(hist)),
            "p99": float(np.percentile(hist, 99)),
            "max": int(hist.max()),
            "users_over_1e4": int((hist >= 10_000).sum()),
        },
        # gather reads each kept event (int32) plus start/stop, writes B x (window+1) int64
        "gather_read_bytes": int(kept.sum()) * 4 + 16 * len(rows),
        "gather_write_bytes": len(rows) * (a.window + 1) * 8,
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks the cache complete


def load(d: Path, name: str) -> np.ndarray:
    return np.load(d / f"{name}.npy")  # fully in memory, not mmap: the op reads RAM, not disk


# ----------------------------------------------------------------------------- cases
# A case loads its inputs and returns them (for the byte count) with run(sink), which
# does the op once and passes its output arrays to sink. Outputs are dropped after sink.


def group_offsets(users: np.ndarray) -> np.ndarray:
    """CSR offsets of the sorted users from one sequential count (no gather of users[perm])."""
    counts = np.bincount(users)
    counts = counts[counts > 0]
    out = np.empty(len(counts) + 1, np.int64)
    out[0] = 0
    np.cumsum(counts, out=out[1:])
    return out


def case_group(d: Path, meta: dict, a: argparse.Namespace, variant: str) -> tuple[dict, Run]:
    users, ts = load(d, "users"), load(d, "ts")
    inputs = {"users": users, "ts": ts}
    if variant == "core":
        return inputs, lambda sink: sink(*lc.group(users, ts))
    if variant == "np_lexsort":  # the textbook stable two-key sort
        return inputs, lambda sink: sink(np.lexsort((ts, users)), group_offsets(users))
    if variant == "np_argsort":  # one stable sort on a combined int64 key (user, ts)
        t0, span = int(ts.min()), int(ts.max()) - int(ts.min()) + 1
        if int(users.max()) * span >= 2**63:
            raise ValueError("user x time key does not fit in int64")

        def run(sink: Sink) -> None:
            key = users * span
            key += ts
            key -= t0
            perm = np.argsort(key, kind="stable")
            del key
            sink(perm, group_offsets(users))

        return inputs, run
    if variant == "polars":  # a row index sorted by (user, ts), ties in input order
        import polars as pl

        df = pl.DataFrame({"user": users, "ts": ts})  # zero-copy views of the arrays

        def run(sink: Sink) -> None:
            perm = df.select(pl.arg_sort_by(["user", "ts"], maintain_order=True)).to_series().to_numpy()
            sink(perm, group_offsets(users))

        return inputs, run
    raise KeyError(variant)


def case_sessionize(d: Path, meta: dict, a: argparse.Namespace, variant: str) -> tuple[dict, Run]:
    offsets, ts = load(d, "offsets"), load(d, "ts_grouped")
    gap = meta["gap"]
    inputs = {"offsets": offsets, "ts": ts}
    E = len(ts)
    if variant == "core":
        return inputs, lambda sink: sink(lc.sessionize(offsets, ts, gap))
    if variant == "numpy":  # one np.diff over all events, then force a start at every user

        def run(sink: Sink) -> None:
            new = np.empty(E, bool)
            new[:1] = True
            np.greater(np.diff(ts), gap, out=new[1:])
            new[offsets[:-1][np.diff(offsets) > 0]] = True
            sink(np.append(np.flatnonzero(new), E))

        return inputs, run
    if variant in ("polars_over", "polars_shift"):
        import polars as pl

        users = load(d, "users_grouped")  # Polars' natural input carries the user column
        inputs["users"] = users
        df = pl.DataFrame({"user": users, "ts": ts})
        if variant == "polars_over":
            new = (pl.col("ts").diff().over("user") > gap).fill_null(True)
        else:  # the same without a window function: a user change also opens a session
            new = (pl.col("ts").diff() > gap) | (pl.col("user").diff() != 0)
            new = new.fill_null(True)

        def run(sink: Sink) -> None:
            starts = df.select(new.arg_true()).to_series().to_numpy()
            sink(np.append(starts, E))

        return inputs, run
    raise KeyError(variant)


def windows_numpy(offsets: np.ndarray, window: int, stride: int, min_len: int = 2) -> tuple:
    """End-anchored sliding windows, fully vectorized: n_u = (len_u - min_len) // stride + 1
    windows per user, the j-th (time order) ends at b_u - (n_u - 1 - j) * stride."""
    a, b = offsets[:-1], offsets[1:]
    n = np.maximum((b - a - min_len) // stride + 1, 0)  # (U,)
    W = int(n.sum())
    seq = np.repeat(np.arange(len(n), dtype=np.int64), n)  # (W,)
    last = np.cumsum(n) - 1  # (U,) global index of each user's final window
    stop = np.repeat(b - last * stride, n)  # stop_i = b - (last - i) * stride
    stop += np.arange(0, W * stride, stride, dtype=np.int64)
    start = np.repeat(a, n)
    np.maximum(start, stop - (window + 1), out=start)
    return seq, start, stop


def case_windows(d: Path, meta: dict, a: argparse.Namespace, variant: str) -> tuple[dict, Run]:
    offsets = load(d, "offsets")
    w, s = meta["window"], meta["stride"]
    inputs = {"offsets": offsets}
    if variant == "core":
        return inputs, lambda sink: sink(*lc.windows(offsets, window=w, stride=s))
    if variant == "numpy":
        return inputs, lambda sink: sink(*windows_numpy(offsets, w, s))
    raise KeyError(variant)


def case_gather(d: Path, meta: dict, a: argparse.Namespace, variant: str) -> tuple[dict, Run]:
    items = load(d, "items")
    starts = load(d, "gather_start").reshape(meta["batches"], meta["batch"])
    stops = load(d, "gather_stop").reshape(meta["batches"], meta["batch"])
    inputs = {"items": items, "start": starts, "stop": stops}
    L = meta["window"]
    width = L + 1
    if variant == "core":

        def run(sink: Sink) -> None:
            for s, e in zip(starts, stops):
                sink(lc.gather(items, s, e, length=L))

        return inputs, run
    if variant == "core_out":  # into one reused buffer, as a loop over batches can do

        def run(sink: Sink) -> None:
            out = np.empty((meta["batch"], width), np.int64)
            for s, e in zip(starts, stops):
                sink(lc.gather(items, s, e, length=L, out=out))

        return inputs, run
    if variant == "np_take":  # one fancy index of a [B, width] index matrix, then mask the padding
        cols = np.arange(width, dtype=np.int64)

        def run(sink: Sink) -> None:
            for s, e in zip(starts, stops):
                idx = (e - width)[:, None] + cols  # (B, width) positions, may fall before start
                pad = idx < s[:, None]
                np.maximum(idx, 0, out=idx)
                out = items.take(idx).astype(np.int64)
                out[pad] = 0
                sink(out)

        return inputs, run
    if variant == "np_rows":  # one slice assignment per row

        def run(sink: Sink) -> None:
            for s, e in zip(starts, stops):
                out = np.zeros((len(s), width), np.int64)
                for r, (lo, hi) in enumerate(zip(s.tolist(), e.tolist())):
                    lo = max(lo, hi - width)
                    out[r, width - (hi - lo) :] = items[lo:hi]
                sink(out)

        return inputs, run
    raise KeyError(variant)


def floor_bytes(op: str, meta: dict) -> tuple[int, str]:
    """Bytes the op reads or writes, whichever is larger, and which it is."""
    E, U, S, W = meta["events"], meta["users"], meta["sessions"], meta["windows"]
    rw = {
        "group": (16 * E, 8 * E + 8 * (U + 1)),  # users + ts -> perm + offsets
        "sessionize": (8 * E + 8 * (U + 1), 8 * (S + 1)),  # ts + offsets -> session offsets
        "windows": (8 * (U + 1), 24 * W),  # offsets -> seq, start, stop
        "gather": (meta["gather_read_bytes"], meta["gather_write_bytes"]),  # all batches
    }[op]
    return (rw[0], "read") if rw[0] >= rw[1] else (rw[1], "write")


def case_floor(d: Path, meta: dict, op: str, fresh: bool) -> tuple[dict, Run]:
    """np.copyto between two touched buffers of the op's byte count: memory bandwidth only
    (no page faults; one thread, as NumPy copies). For gather, one copy of all batches."""
    n = floor_bytes(op, meta)[0] // 8
    src = np.ones(n, np.int64)
    if fresh:  # the same copy into a new buffer: page faults included, as for a new output
        return {"src": src}, lambda sink: (np.copy(src), sink())
    dst = np.ones(n, np.int64)
    return {"src": src}, lambda sink: (np.copyto(dst, src), sink())


CASES: dict[str, tuple[str, ...]] = {
    "group": ("core", "floor", "floor_fresh", "np_lexsort", "np_argsort", "polars"),
    "sessionize": ("core", "floor", "floor_fresh", "numpy", "polars_over", "polars_shift"),
    "windows": ("core", "floor", "floor_fresh", "numpy"),
    "gather": ("core", "core_out", "floor", "floor_fresh", "np_take", "np_rows"),
}
BUILDERS = {"group": case_group, "sessionize": case_sessionize, "windows": case_windows, "gather": case_gather}


# ----------------------------------------------------------------------------- worker


def worker(a: argparse.Namespace) -> None:
    """Run one case in this fresh process and print one JSON line with its figures."""
    op, variant = a.worker.split(":")
    d = Path(a.cache)
    meta = json.loads((d / "meta.json").read_text())
    if variant.startswith("floor"):
        inputs, run = case_floor(d, meta, op, fresh=variant == "floor_fresh")
    else:
        inputs, run = BUILDERS[op](d, meta, a, variant)
    try:  # reset the high-water mark to the current RSS, so peak - base is the op's own
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = status_bytes("VmRSS")

    digest = hashlib.blake2b(digest_size=16)
    out = {"calls": 0, "bytes": 0, "max_call_bytes": 0, "sink_s": 0.0}

    def sink(*arrays: np.ndarray) -> None:
        t0 = time.perf_counter()
        nbytes = sum(x.nbytes for x in arrays)
        out["calls"] += 1
        out["bytes"] += nbytes
        out["max_call_bytes"] = max(out["max_call_bytes"], nbytes)
        if hashing:  # first run only; int64 values in 512 KiB chunks, so no big temporary
            for x in arrays:
                flat = np.ascontiguousarray(x).reshape(-1)
                for i in range(0, len(flat), 1 << 16):
                    digest.update(flat[i : i + (1 << 16)].astype(np.int64, copy=False))
        out["sink_s"] += time.perf_counter() - t0

    times, cpu = [], []  # wall and CPU seconds (all threads) per run
    for r in range(a.repeats):
        hashing = r == 0
        out.update(calls=0, bytes=0, max_call_bytes=0, sink_s=0.0)
        c0, t0 = time.process_time(), time.perf_counter()
        run(sink)
        times.append(time.perf_counter() - t0 - out["sink_s"])
        cpu.append(time.process_time() - c0 - out["sink_s"])
        if sum(times) > a.budget_s:
            break
    peak = status_bytes("VmHWM")
    if peak is None or base is None:  # no /proc: the whole process's peak (ru_maxrss)
        base, peak = 0, peak_rss_bytes()
    print(
        json.dumps(
            {
                "case": a.worker,
                "seconds": min(times),
                "runs": len(times),
                "all_seconds": times,
                "cpu_over_wall": cpu[times.index(min(times))] / max(min(times), 1e-9),
                "calls": out["calls"],
                "input_bytes": sum(x.nbytes for x in inputs.values()),
                "output_bytes": out["bytes"],
                "max_call_bytes": out["max_call_bytes"],
                "peak_extra_bytes": peak - base,
                "digest": digest.hexdigest() if out["bytes"] else None,
            }
        )
    )


# ----------------------------------------------------------------------------- driver


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def common_flags(a: argparse.Namespace) -> list[str]:
    return ["--cache", str(a.cache), "--repeats", str(a.repeats), "--budget-s", str(a.budget_s)]


def merge(old: dict | None, new: dict) -> dict:
    """Combine two rounds of one case: the best time (and its CPU/wall), every run, the
    highest peak and load."""
    if old is None or "error" in new:
        return new if old is None else old
    best = new if new["seconds"] < old["seconds"] else old
    return {
        **best,
        "runs": old["runs"] + new["runs"],
        "all_seconds": old["all_seconds"] + new["all_seconds"],
        "peak_extra_bytes": max(old["peak_extra_bytes"], new["peak_extra_bytes"]),
        "load": max(old["load"], new["load"]),
    }


def select(only: str | None) -> list[str]:
    names = [f"{op}:{v}" for op in OPS for v in CASES[op]]
    if not only:
        return names
    want = [w.strip() for w in only.split(",") if w.strip()]
    bad = [w for w in want if w not in names and w not in OPS]
    if bad:
        raise ValueError(f"unknown case {bad[0]!r}; choose from {', '.join(OPS)} or {', '.join(names)}")
    return [n for n in names if n in want or n.split(":")[0] in want]


def machine() -> dict:
    import polars as pl

    model, cores = cpu_and_cores()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": cores,
        "mem_gib": round(mem, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "polars": pl.__version__,
        "rayon_threads": os.environ.get("RAYON_NUM_THREADS", "all cores"),
    }


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f}" if x >= 2**20 else f"{x / 2**20:.2f}"


def report(res: dict[str, dict], meta: dict, mach: dict, a: argparse.Namespace) -> dict:
    """Print the summary and detail tables; return the summary rows for the JSON."""
    from rich.console import Console
    from rich.table import Table

    con = Console(file=sys.stdout, width=170)
    h = meta["history"]
    con.print(
        f"[bold]longrec core benchmark[/]  {meta['events']:,} events, {meta['users']:,} users "
        f"(history mean {h['mean']:.0f}, median {h['median']:.0f}, p99 {h['p99']:.0f}, max {h['max']:,}; "
        f"{h['users_over_1e4']} users ≥ 10^4), {meta['sessions']:,} sessions (gap {meta['gap']} s), "
        f"{meta['windows']:,} windows (window {meta['window']}, stride {meta['stride']}), "
        f"gather {meta['batches']:,} batches × {meta['batch']}×{meta['window'] + 1}"
    )
    con.print(
        f"machine: {mach['cpu']}, {mach['cores']} cores, {mach['mem_gib']} GiB; python {mach['python']}, "
        f"numpy {mach['numpy']}, polars {mach['polars']}, rayon threads: {mach['rayon_threads']}; "
        f"best of {a.rounds} rounds × {a.repeats} runs (fewer when a case passes {a.budget_s:g} s)"
    )
    summary = []
    t = Table(title="core vs copy floor and best peer (gather: per batch)", title_justify="left")
    for col in (
        "op",
        "core",
        "floor",
        "floor of",
        "core/floor",
        "best peer",
        "peer/core",
        "target floor·peer·mem",
        "met?",
        "peak extra MiB",
        "outputs MiB",
        "peak/(in+out)",
    ):
        t.add_column(
            col, justify="left" if col in ("op", "floor of", "best peer", "target floor·peer·mem") else "right"
        )
    # gather also into one reused buffer (out=): touched memory, like the floor's copy.
    rows_to_show = [(op, "core") for op in OPS] + [("gather", "core_out")]
    for op, variant in rows_to_show:
        if variant != "core" and f"{op}:{variant}" not in res:
            continue
        core, floor = res.get(f"{op}:{variant}", {}), res.get(f"{op}:floor", {})
        peers = {
            k.split(":")[1]: v
            for k, v in res.items()
            if k.startswith(op + ":") and not k.split(":")[1].startswith(("core", "floor")) and "seconds" in v
        }
        if not core and not floor and not peers:
            continue
        per = meta["batches"] if op == "gather" else 1  # gather: report per batch
        cs = core.get("seconds")
        fs = floor.get("seconds")
        nbytes, which = floor_bytes(op, meta)
        best = min(peers, key=lambda k: peers[k]["seconds"]) if peers else None
        ps = peers[best]["seconds"] if best else None
        r_floor = cs / fs if cs and fs else None
        r_peer = ps / cs if cs and ps else None
        mem = None
        if "seconds" in core:
            held = core["max_call_bytes"]  # outputs alive at once (one batch for gather)
            mem = (core["input_bytes"] + core["peak_extra_bytes"]) / (core["input_bytes"] + held)
        marks = [
            "—" if r_floor is None else ("✓" if r_floor <= FLOOR_TARGET else "✗"),
            "—" if r_peer is None else ("✓" if r_peer >= PEER_TARGET[op] else "✗"),
            "—" if mem is None else ("✓" if mem <= MEM_TARGET else "✗"),
        ]
        row = {
            "op": op if variant == "core" else f"{op} ({variant})",
            "core_s": cs and cs / per,
            "floor_s": fs and fs / per,
            "floor_bytes": nbytes,
            "floor_of": which,
            "core_over_floor": r_floor,
            "peer": best,
            "peer_s": ps and ps / per,
            "peer_over_core": r_peer,
            "target_floor": FLOOR_TARGET,
            "target_peer": PEER_TARGET[op],
            "target_mem": MEM_TARGET,
            "peak_extra_bytes": core.get("peak_extra_bytes"),
            "output_bytes": core.get("max_call_bytes"),
            "peak_over_in_out": mem,
            "met": dict(zip(("floor", "peer", "mem"), marks)),
        }
        summary.append(row)
        t.add_row(
            row["op"],
            fmt_s(row["core_s"]),
            fmt_s(row["floor_s"]),
            f"{mib(nbytes)} MiB {which}",
            "—" if r_floor is None else f"{r_floor:.2f}×",
            "—" if best is None else f"{best} {fmt_s(row['peer_s'])}",
            "—" if r_peer is None else f"{r_peer:.2f}×",
            f"≤{FLOOR_TARGET:g}× · ≥{PEER_TARGET[op]:g}× · ≤{MEM_TARGET:g}×",
            " ".join(marks),
            "—" if mem is None else mib(core["peak_extra_bytes"]),
            "—" if mem is None else mib(core["max_call_bytes"]),
            "—" if mem is None else f"{mem:.3f}",
        )
    con.print(t)

    t = Table(title="every measurement (fresh process each; total over all batches for gather)", title_justify="left")
    for col in (
        "case",
        "seconds",
        "runs",
        "÷ core",
        "cpu/wall",
        "inputs MiB",
        "outputs MiB",
        "peak extra MiB",
        "same output as core",
        "load",
    ):
        t.add_column(col, justify="left" if col == "case" else "right")
    for name, r in res.items():
        if "error" in r:
            t.add_row(name, f"[red]failed: {r['error']}[/]", "", "", "", "", "", "", "", f"{r['load']:.1f}")
            continue
        core = res.get(name.split(":")[0] + ":core", {})
        same = "—"
        if name.split(":")[1] == "core" or name.split(":")[1].startswith("floor") or not core.get("digest"):
            same = "—"
        else:
            same = "yes" if r["digest"] == core["digest"] else "[red]NO[/]"
        ratio = f"{r['seconds'] / core['seconds']:.2f}×" if core.get("seconds") else "—"
        t.add_row(
            name,
            fmt_s(r["seconds"]),
            str(r["runs"]),
            ratio,
            f"{r['cpu_over_wall']:.2f}",
            mib(r["input_bytes"]),
            mib(r["max_call_bytes"]),
            mib(r["peak_extra_bytes"]),
            same,
            f"{r['load']:.1f}",
        )
    con.print(t)
    busy = max(r["load"] for r in res.values())
    if busy > 0.5 * mach["cores"]:
        con.print(
            f"[yellow]warning: 1-min load average reached {busy:.1f} on {mach['cores']} cores during the run; "
            "other processes were competing, so times are pessimistic and noisy (best-of helps only partly).[/]"
        )
    con.print(
        "floor = np.copyto between two touched buffers of the op's larger byte count (one thread, no "
        "page faults; floor_fresh copies into a new buffer); peer/core > 1 means the core is faster; "
        "peak/(in+out) = (inputs + peak RSS above the loaded inputs) / (inputs + outputs held at once); "
        "cpu/wall = CPU seconds of all threads per wall second (parallelism); load = 1-min load average."
    )
    return {"summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--events",
        type=lambda s: int(float(s)),
        default=10_000_000,
        help="events in the generated log (docs/PERFORMANCE.md: 1e8)",
    )
    p.add_argument("--max-len", type=lambda s: int(float(s)), default=100_000, help="cap on one user's history length")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--gap", type=int, default=1800, help="sessionize gap, seconds")
    p.add_argument("--window", type=int, default=200, help="window length (events per example, plus the target)")
    p.add_argument("--stride", type=int, default=64, help="window stride")
    p.add_argument("--batch", type=int, default=256, help="gather batch size")
    p.add_argument("--batches", type=int, default=2000, help="gather batches timed (random windows)")
    p.add_argument("--repeats", type=int, default=2, help="runs per case in each round (one process)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over all cases; each case reports its best run")
    p.add_argument(
        "--budget-s", type=float, default=60.0, help="no more runs or rounds for a case once it took this long"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for the core and Polars (RAYON_NUM_THREADS, POLARS_MAX_THREADS)",
    )
    p.add_argument(
        "--cache", default="bench/out/cache", help="folder for the generated arrays (.npy), one subfolder per log"
    )
    p.add_argument("--only", default=None, help="comma-separated ops or op:variant cases, e.g. 'group,gather:core'")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one case
    a = p.parse_args()
    if a.worker == "gen":
        generate(Path(a.cache), a)
        return
    if a.worker:
        worker(a)
        return
    try:
        names = select(a.only)
    except ValueError as e:
        p.error(str(e))  # exit 2 with one line
    key = f"e{a.events}-m{a.max_len}-s{a.seed}-g{a.gap}-w{a.window}-s{a.stride}-b{a.batch}x{a.batches}"
    a.cache = Path(a.cache) / key
    env = dict(os.environ)
    # No case calls BLAS, but NumPy's OpenBLAS threads spin after start-up, taking a core
    # from whatever runs then (it shows as cpu/wall 2 for the one-thread copy floor).
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    if a.threads:
        env.update(RAYON_NUM_THREADS=str(a.threads), POLARS_MAX_THREADS=str(a.threads))
    if not (a.cache / "meta.json").exists():
        a.cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # In a subprocess, so this process stays small while the workers run.
        gen = [*sys.argv, "--worker", "gen", "--cache", str(a.cache)]
        if subprocess.run([sys.executable, *gen], env=env).returncode != 0:
            raise SystemExit("error: generating the log failed (see above)")
        say(f"generated in {time.perf_counter() - t0:.0f} s")
    meta = json.loads((a.cache / "meta.json").read_text())
    mach = machine()
    if a.threads:
        mach["rayon_threads"] = a.threads
    # Rounds: every case once per round (a fresh process each), best over all rounds, so
    # every case samples the machine's load over the whole run, not one moment of it.
    res: dict[str, dict] = {}
    spent = dict.fromkeys(names, 0.0)
    for rnd in range(a.rounds):
        for name in names:
            if rnd and ("error" in res[name] or spent[name] > a.budget_s):
                continue  # slow cases get one round
            t0 = time.perf_counter()
            load_before = os.getloadavg()[0]
            r = run_fresh_worker(__file__, name, common_flags(a), "case", env)
            spent[name] += time.perf_counter() - t0
            r["load"] = max(load_before, os.getloadavg()[0])
            res[name] = merge(res.get(name), r)
            say(
                f"round {rnd + 1}/{a.rounds} {name:<24} "
                + (
                    f"{fmt_s(r['seconds'])} (best of {r['runs']}; {time.perf_counter() - t0:.0f} s)"
                    if "seconds" in r
                    else f"failed: {r['error']}"
                )
            )
    out = report(res, meta, mach, a)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"meta": meta, "machine": mach, "results": res, **out}, indent=1))
        say(f"wrote {a.json}")


if __name__ == "__main__":
    main()
