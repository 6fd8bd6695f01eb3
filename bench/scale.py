r"""Scale benchmark: a 10^9-event log through sharded prep, the core's windows and gather over
all of it, and a 10^7-item catalogue trained and evaluated end to end, on one CPU machine.

    python bench/scale.py                                # every stage at full size: 10^9 events, 10^7 items (hours)
    python bench/scale.py --events 1e8 --shards 4        # a smaller log
    python bench/scale.py --only train --items 1e7       # one stage
    python bench/scale.py --only train --items 4e8 --train-events 6e8 --train-shards 8 --kshift-rows computed \
        --kshift-optimizer rowwise --eval-users 256      # a 1.16e8-item catalogue (600M events)
    python bench/scale.py --only prep,core --json bench/out/scale.json
    python bench/scale.py --only codes --items 4e8 --train-events 6e8 --train-shards 8 --code-oversample 0  # 116M items

Stages (each figure is measured in a fresh subprocess, so each peak RSS is that stage's own;
peak RSS is VmHWM from /proc, see bench/memory.py):
- prep   generate a synthetic log of --events as Parquet (streamed, cached in --dir), then
         `prep.py LOG --shards N`: seconds, events/s, peak RSS, swap used, data dir size.
- core   over the prepared log's 10^9 events: `windows` (window 200, stride 64) and `gather`
         (batches of 256 x 201; a first pass, then new arrays and a reused out= buffer, each
         over its own random windows, then windows from the first tenth of the events only)
         beside a plain NumPy copy of the same bytes (the bandwidth floor: into fresh memory,
         as the op's output is, and into memory already touched).
- train  a synthetic data dir with --items (10^7) items, trained with the k-shift embedding and
         the sampled softmax for --train-steps steps, then evaluated by eval.py with the full
         chunked ranking on --eval-users sampled targets: peak RSS per stage, and the memory a
         full item table with AdamW would need.
- codes  the item codes of --item-emb codes (longrec_core/codes.py: a streamed randomized SVD of the
         training events, then balanced buckets) for the train stage's data dir (prepared when
         absent): assignment seconds, peak RSS (the memory-mapped events it reads included), the
         share of items without a training event, and the bytes per item of each part of the code
         embedding (embedding_memory_bytes at d = 64) beside a full table's.
Nothing here asserts on time; it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from memory import huge_page_bytes, peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
EVAL_BATCH = 256  # users ranked at once in the train stage's validation and eval
CLEAN_ENV = dict(os.environ)  # before Polars sets its allocator options in this process

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
num = lambda s: int(float(s))
p.add_argument("--only", default="prep,core,train", help="stages to run, comma-separated (default: %(default)s)")
p.add_argument("--events", type=num, default=10**9, help="events of the generated log (default: 1e9)")
p.add_argument("--log-items", type=num, default=10**6, help="items of the generated log (default: 1e6)")
p.add_argument("--shards", type=int, default=16, help="prep --shards (default: 16)")
p.add_argument(
    "--items",
    type=num,
    default=3 * 10**7,
    help="train stage: the generator's catalogue; half of 3e7 occurs in 1e8 events, 29%% of 4e8 in 6e8 (default: 3e7)",
)
p.add_argument("--train-events", type=num, default=10**8, help="train stage: events of its log (default: 1e8)")
p.add_argument("--train-steps", type=int, default=200, help="train stage: optimizer steps (default: 200)")
p.add_argument(
    "--train-shards", type=int, default=None, help="train stage: prep --shards of its log (default: unsharded)"
)
p.add_argument(
    "--kshift-rows",
    choices=("stored", "computed"),
    default="stored",
    help="train stage: train.py --kshift-rows (computed: no [N+1, k] row table; default: stored)",
)
p.add_argument(
    "--kshift-optimizer",
    choices=("adamw", "rowwise"),
    default="adamw",
    help="train stage: train.py --kshift-optimizer (rowwise: sparse gradient, 8 bytes of state a row; default: adamw)",
)
p.add_argument(
    "--eval-users", type=int, default=2000, help="train stage: test targets ranked on all items (default: 2000)"
)
p.add_argument("--code-subspaces", type=int, default=8, help="codes stage: codes per item m (default: 8)")
p.add_argument("--code-centroids", type=int, default=256, help="codes stage: values per code (default: 256)")
p.add_argument(
    "--code-oversample",
    type=int,
    default=8,
    help="codes stage: extra SVD columns; memory is 2 x (N+1) x (m + oversample) float32 (default: 8)",
)
p.add_argument("--threads", type=int, default=None, help="torch threads in train/eval (default: torch's choice)")
p.add_argument(
    "--dir", default=str(ROOT / "bench" / "out" / "scale"), help="logs, data dirs, runs (default: bench/out/scale)"
)
p.add_argument("--json", default=None, help="also write every figure to this JSON file")
p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout


def swap_out_pages() -> int:
    """Pages swapped out since boot (/proc/vmstat pswpout); 0 where unknown."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("pswpout "):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------
# workers (fresh processes)


def run_script(argv: list[str]) -> float:
    """Run a project script in this process (runpy, as `python scripts/X.py`); its wall seconds."""
    import contextlib
    import runpy

    sys.argv = [argv[0], *argv[1:]]
    t = time.perf_counter()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            if e.code:
                raise RuntimeError(f"{Path(argv[0]).name} exited with {e.code}") from None
    return time.perf_counter() - t


def copy_floor(nbytes: int, fresh: bool) -> float:
    """Seconds to copy nbytes with NumPy into fresh (page-faulting) or already touched memory."""
    import numpy as np

    src = np.ones(nbytes // 8, dtype=np.int64)
    dst = None if fresh else np.zeros_like(src)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        if fresh:
            out = np.empty_like(src)
            np.copyto(out, src)
            del out
        else:
            np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return best


def batch_copy_floor(batches: int, shape: tuple[int, int]) -> float:
    """Seconds per batch to copy one batch-sized array into a new array, `batches` times: the
    floor of an op that returns a fresh batch each call, as `gather` without `out=` does."""
    import numpy as np

    src = np.ones(shape, dtype=np.int64)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(batches):
            src.copy()
        best = min(best, (time.perf_counter() - t) / batches)
    return best


def worker_core(spec: dict) -> dict:
    """windows and gather over every event of a sharded data dir, beside the copy floor."""
    import numpy as np

    import longrec_core as lc

    root = Path(spec["data"])
    manifest = json.loads((root / "manifest.json").read_text())
    dirs = [root / d for d in manifest["shards"]["dirs"]]
    offsets_parts, items_parts, base = [], [], 0
    for d in dirs:  # the shards side by side: one event array, as one unsharded dir would hold
        off = np.load(d / "offsets.npy")
        offsets_parts.append(off[:-1] + base)
        base += int(off[-1])
        items_parts.append(np.load(d / "items.npy", mmap_mode="r"))
    offsets = np.concatenate(offsets_parts + [np.array([base])])
    items = np.concatenate(items_parts)  # int32, in memory
    del items_parts
    # NumPy asks for transparent huge pages on big arrays; how much of the items got them
    huge = huge_page_bytes(items.ctypes.data, items.nbytes)
    out: dict = {
        "events": int(base),
        "users": len(offsets) - 1,
        "items_huge_page_share": None if huge is None else huge / items.nbytes,
    }

    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        seq, start, stop = lc.windows(offsets, window=200, stride=64)
        best = min(best, time.perf_counter() - t)
        n_windows = len(seq)
        del seq, start, stop
    wbytes = 24 * n_windows
    out["windows"] = {
        "seconds": best,
        "windows": n_windows,
        "bytes_out": wbytes,
        "floor_fresh": copy_floor(wbytes, True),
        "floor_touched": copy_floor(wbytes, False),
    }

    seq, start, stop = lc.windows(offsets, window=200, stride=64)
    batches, batch = 2000, 256

    # Three passes, each over its own random windows: the first finds the page tables of the
    # 4 GB items array cold; the later two (a new array per batch, then one reused buffer,
    # out=) find them warm, as a long training run may. The pass order is the same every run.
    passes = []
    for seed in range(3):
        rows = np.random.default_rng(seed).integers(0, len(start), batches * batch)
        passes.append((start[rows].reshape(batches, batch), stop[rows].reshape(batches, batch)))
    # A fourth pass draws its windows from the first tenth of the events only: the same code and
    # the same kind of rows, read from a 10x smaller stretch of memory. What it saves against
    # the full-range passes is the cost of the spread (address translation, DRAM pages).
    local = np.flatnonzero(stop <= base // 10)
    rows = local[np.random.default_rng(3).integers(0, len(local), batches * batch)]
    passes.append((start[rows].reshape(batches, batch), stop[rows].reshape(batches, batch)))
    del seq, start, stop, local

    def gather_all(g_start: np.ndarray, g_stop: np.ndarray, buffer: np.ndarray | None) -> float:
        t = time.perf_counter()
        for s, e in zip(g_start, g_stop):
            lc.gather(items, s, e, length=200, out=buffer)
        return (time.perf_counter() - t) / batches

    g_start, g_stop = passes[0]
    kept = np.minimum(g_stop - g_start, 201)
    read, write = int(kept.sum()) * 4 + 16 * batches * batch, batches * batch * 201 * 8
    out["gather"] = {
        "seconds_per_batch_cold": gather_all(*passes[0], None),
        "seconds_per_batch": gather_all(*passes[1], None),
        "seconds_per_batch_out": gather_all(*passes[2], np.empty((batch, 201), np.int64)),
        "seconds_per_batch_tenth": gather_all(*passes[3], None),
        "batches": batches,
        "bytes_read": read,
        "bytes_written": write,
        "floor_per_batch": copy_floor(max(read, write), False) / batches,
        "floor_fresh_per_batch": batch_copy_floor(batches, (batch, 201)),
    }
    out["peak_rss"] = peak_rss_bytes()
    return out


def worker_codes(spec: dict) -> dict:
    """The item codes of a data dir, timed from its memory-mapped shards (the event arrays it does not
    read, times and sessions, are never loaded)."""
    from longrec_core.codes import item_codes, training_events
    from longrec_core.datadir import read_manifest

    events = training_events(spec["data"])
    counts = read_manifest(spec["data"])["counts"]
    t = time.perf_counter()
    out = item_codes(
        events,
        counts["items"],
        subspaces=spec["subspaces"],
        centroids=spec["centroids"],
        seed=0,
        oversample=spec["oversample"],
    )
    return {
        "seconds": time.perf_counter() - t,
        "peak_rss": peak_rss_bytes(),
        "unseen_share": out.unseen_share,
        "n_items": counts["items"],
        "n_users": sum(len(train_end) for _, _, train_end in events),
        "n_events": sum(len(items) for items, _, _ in events),
    }


def worker(spec: dict) -> dict:
    if spec["case"] == "core":
        return worker_core(spec)
    if spec["case"] == "codes":
        return worker_codes(spec)
    seconds = run_script(spec["argv"])
    return {"seconds": seconds, "peak_rss": peak_rss_bytes()}


def measure(spec: dict) -> dict:
    """One worker in a fresh process; also the swap it caused."""
    swap0 = swap_out_pages()
    r = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=CLEAN_ENV
    )
    if r.returncode != 0:
        sys.exit(f"{spec.get('case')} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["swap_out_bytes"] = (swap_out_pages() - swap0) * os.sysconf("SC_PAGE_SIZE")
    return res


# ---------------------------------------------------------------------------------------------
# stages


def gib(x: float) -> str:
    return f"{x / 2**30:,.2f} GiB"


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def make_log(a: argparse.Namespace, folder: Path) -> Path:
    """The synthetic log as Parquet, streamed block by block; reused when present."""
    from longrec_core import synthetic

    users = synthetic.users_for_events(a.events, items=a.log_items)
    cfg = synthetic.SyntheticConfig(users=users, items=a.log_items, seed=0)
    path = folder / f"log-u{users}-i{a.log_items}.parquet"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    print(f"generating about {a.events:,} events ({users:,} users, {a.log_items:,} items) -> {path}", flush=True)
    t = time.perf_counter()
    tmp = path.with_suffix(".parquet.tmp")
    synthetic.write_parquet(str(tmp), cfg)
    tmp.rename(path)
    print(f"generated in {time.perf_counter() - t:,.0f} s", flush=True)
    return path


def stage_prep(a: argparse.Namespace, folder: Path) -> dict:
    log = make_log(a, folder)
    out = folder / f"data-{log.stem}-x{a.shards}"
    r = measure(
        {
            "case": "prep",
            "argv": [str(SCRIPTS / "prep.py"), str(log), "--shards", str(a.shards), "--out", str(out), "--force"],
        }
    )
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    r.update(
        events=counts["events"],
        users=counts["users"],
        log=str(log),
        log_bytes=log.stat().st_size,
        data=str(out),
        data_bytes=dir_bytes(out),
        events_per_second=counts["events"] / r["seconds"],
    )
    print(
        f"prep --shards {a.shards}: {r['events']:,} events ({r['users']:,} users) in {r['seconds']:,.0f} s = "
        f"{r['events_per_second'] / 1e6:.2f}M events/s; peak RSS {gib(r['peak_rss'])}; swapped out "
        f"{gib(r['swap_out_bytes'])}; data dir {gib(r['data_bytes'])} from a {gib(r['log_bytes'])} Parquet log",
        flush=True,
    )
    return r


def stage_core(a: argparse.Namespace, folder: Path, data: Path) -> dict:
    r = measure({"case": "core", "data": str(data)})
    w, g = r["windows"], r["gather"]
    print(
        f"windows over {r['events']:,} events: {w['windows']:,} windows in {w['seconds']:.3f} s = "
        f"{w['seconds'] / w['floor_fresh']:.2f}x a copy of the same bytes into fresh memory "
        f"({w['seconds'] / w['floor_touched']:.2f}x into touched memory)",
        flush=True,
    )
    floor, fresh = g["floor_per_batch"], g["floor_fresh_per_batch"]
    print(
        f"gather, 256 x 201 batches: first pass over the items {g['seconds_per_batch_cold'] * 1e6:,.0f} us per batch "
        f"= {g['seconds_per_batch_cold'] / floor:.2f}x the copy floor; then {g['seconds_per_batch'] * 1e6:,.0f} us "
        f"= {g['seconds_per_batch'] / floor:.2f}x returning new arrays ({g['seconds_per_batch'] / fresh:.2f}x NumPy "
        f"copying one batch into a new array), {g['seconds_per_batch_out'] * 1e6:,.0f} us = "
        f"{g['seconds_per_batch_out'] / floor:.2f}x into one reused buffer (out=); windows from the first tenth "
        f"of the events only: {g['seconds_per_batch_tenth'] * 1e6:,.0f} us = "
        f"{g['seconds_per_batch_tenth'] / floor:.2f}x; "
        f"peak RSS {gib(r['peak_rss'])}; "
        f"items in huge pages: {r['items_huge_page_share']:.0%}",
        flush=True,
    )
    return r


def train_data(a: argparse.Namespace, folder: Path) -> Path:
    """The data dir of the train and codes stages."""
    return folder / (
        f"data-items{a.items}-e{a.train_events}" + ("" if a.train_shards is None else f"-x{a.train_shards}")
    )


def prep_train_data(a: argparse.Namespace, data: Path) -> dict:
    """prep.py's synthetic log of --items and --train-events into `data`, measured."""
    return measure(
        {
            "case": "prep",
            "argv": [
                str(SCRIPTS / "prep.py"),
                "--synthetic",
                "--items",
                str(a.items),
                "--events",
                str(a.train_events),
                *([] if a.train_shards is None else ["--shards", str(a.train_shards)]),
                "--out",
                str(data),
                "--force",
            ],
        }
    )


def stage_codes(a: argparse.Namespace, folder: Path) -> dict:
    from longrec_core.model import ModelConfig, embedding_memory_bytes

    data = train_data(a, folder)
    res: dict = {}
    if not (data / "manifest.json").exists():
        res["prep"] = prep_train_data(a, data)
    res["codes"] = r = measure(
        {
            "case": "codes",
            "data": str(data),
            "subspaces": a.code_subspaces,
            "centroids": a.code_centroids,
            "oversample": a.code_oversample,
        }
    )
    cfg = ModelConfig(
        n_items=r["n_items"],
        max_len=50,
        item_emb="codes",
        code_subspaces=a.code_subspaces,
        code_centroids=a.code_centroids,
    )
    res["embedding_memory"] = mem = embedding_memory_bytes(cfg)
    n = r["n_items"]
    print(
        f"codes of {n:,} items ({r['n_users']:,} users, {r['n_events']:,} events), {a.code_subspaces} sub-spaces x "
        f"{a.code_centroids:,} centroids, oversample {a.code_oversample}: assigned in {r['seconds']:,.0f} s, "
        f"peak RSS {gib(r['peak_rss'])}, {r['unseen_share']:.1%} of items hashed (no training event); "
        f"bytes per item to train at d = 64: codes {mem['codes_bytes'] / n:.2f}, sub-tables with gradient and AdamW "
        f"{4 * mem['table_bytes'] / n:.4f}, total {mem['bytes_per_item']:.2f} "
        f"(a full table {mem['full_total_bytes'] / n:,.0f})",
        flush=True,
    )
    return res


def stage_train(a: argparse.Namespace, folder: Path) -> dict:
    from longrec_core.model import ModelConfig, embedding_memory_bytes
    from longrec_core.rundir import RunDir

    data = train_data(a, folder)
    run = folder / f"run-items{a.items}"
    threads = [] if a.threads is None else ["--threads", str(a.threads)]
    res: dict = {}
    res["prep"] = prep_train_data(a, data)
    if run.exists():
        import shutil

        shutil.rmtree(run)
    train = [
        str(SCRIPTS / "train.py"),
        "--data",
        str(data),
        "--out",
        str(run),
        "--item-emb",
        "kshift",
        "--kshift-compression",
        "16",
        "--kshift-rows",
        a.kshift_rows,
        "--kshift-optimizer",
        a.kshift_optimizer,
        "--loss",
        "sampled",
        "--negatives",
        "2048",
        "--window",
        "50",
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "--max-steps",
        str(a.train_steps),
        # one user batch per validation: a catalogue whose vectors do not fit as one table composes
        # them again for every batch (longrec_core.metrics)
        "--eval-batch-size",
        str(EVAL_BATCH),
        "--valid-sample",
        "200",
        *threads,
    ]
    res["train"] = measure({"case": "train", "argv": train})
    summary = RunDir(run).summary()
    if summary is None:
        raise SystemExit(f"{run}: train.py wrote no summary")
    res["train"].update(
        steps=summary["steps"],
        tokens_per_second=summary["tokens_per_second"],
        embedding_memory=summary["embedding_memory"],
    )
    res["eval"] = measure(
        {
            "case": "eval",
            "argv": [
                str(SCRIPTS / "eval.py"),
                "--run",
                str(run),
                "--sample-users",
                str(a.eval_users),
                "--bootstrap",
                "0",
                "--batch-size",
                str(EVAL_BATCH),
            ],
        }
    )
    metrics = RunDir(run).read_metrics()
    if metrics is None:
        raise SystemExit(f"{run}: eval.py wrote no metrics")
    res["eval"].update(n_users=metrics["n_users"], n_items=metrics["n_items"], ndcg10=metrics["metrics"]["NDCG@10"])
    full = embedding_memory_bytes(ModelConfig(n_items=metrics["n_items"], max_len=50))
    res["full_table_with_adam_bytes"] = full["full_total_bytes"]
    em = summary["embedding_memory"]
    print(
        f"{metrics['n_items']:,} items: prep {res['prep']['seconds']:,.0f} s (peak {gib(res['prep']['peak_rss'])}); "
        f"train {res['train']['steps']} steps at {res['train']['tokens_per_second']:,.0f} tokens/s "
        f"(peak {gib(res['train']['peak_rss'])}; k-shift embedding + grad + optimizer state + rows "
        f"{gib(em['total_bytes'])}, "
        f"a full table + grad + AdamW {gib(res['full_table_with_adam_bytes'])}); eval of {res['eval']['n_users']:,} "
        f"targets on all {res['eval']['n_items']:,} items in {res['eval']['seconds']:,.0f} s "
        f"(peak {gib(res['eval']['peak_rss'])})",
        flush=True,
    )
    return res


def main() -> None:
    a = p.parse_args()
    if a.worker is not None:
        print(json.dumps(worker(json.loads(a.worker))))
        return
    stages = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(stages) - {"prep", "core", "train", "codes"}
    if unknown:
        sys.exit(f"--only: unknown stage(s) {', '.join(sorted(unknown))}; choose from prep, core, train, codes")
    folder = Path(a.dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"scale benchmark on {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        flush=True,
    )
    results: dict = {"args": {k: v for k, v in vars(a).items() if k != "worker"}}
    if "prep" in stages or "core" in stages:
        if "prep" in stages:
            results["prep"] = stage_prep(a, folder)
            data = Path(results["prep"]["data"])
        else:
            found = sorted(folder.glob(f"data-log-*-x{a.shards}"))
            if not found:
                sys.exit(f"--only core needs a prepared log in {folder}: run the prep stage first")
            data = found[-1]
        if "core" in stages:
            results["core"] = stage_core(a, folder, data)
    if "train" in stages:
        results["train"] = stage_train(a, folder)
    if "codes" in stages:
        results["codes"] = stage_codes(a, folder)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
