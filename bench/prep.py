"""Benchmark scripts/prep.py: events per second and peak memory on a generated CSV and Parquet
log, beside a plain Polars read of the same file (the floor: parsing alone).

    python bench/prep.py                    # 10^7 events (a couple of minutes on 2 cores)
    python bench/prep.py --events 1e8       # 10^8 events (~2.5 GB of CSV)

The log comes from longrec_core.synthetic (long-tailed users and items, in time order
across users within each block of users), written once to bench/out/ and reused. Every
measurement runs in a fresh subprocess, so each peak RSS is that case's own high-water
mark (bench/README.md). Wall time is measured inside the worker around the work
only (interpreter start-up and imports excluded). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from memory import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
PREP = ROOT / "scripts" / "prep.py"
# Importing Polars sets _RJEM_MALLOC_CONF in os.environ (its allocator's defaults); workers
# must not inherit that from this parent, or prep.py could not choose its own setting.
CLEAN_ENV = dict(os.environ)

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--events", type=float, default=1e7, help="about this many events (default: 1e7)")
p.add_argument("--items", type=int, default=100_000, help="catalogue size of the generated log (default: 100000)")
p.add_argument(
    "--dir",
    default=str(ROOT / "bench" / "out" / "prep"),
    help="where the logs and data dirs go (default: bench/out/prep)",
)
p.add_argument("--keep", action="store_true", help="keep the written data dirs (default: delete them)")
p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout


def worker(spec: dict) -> dict:
    """Runs in a fresh process: one case, timed around the work only."""
    path = Path(spec["path"])
    if spec["case"] == "polars read":
        import polars as pl

        lf = pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_csv(path)
        t = time.perf_counter()
        df = lf.select("user", "item", "ts").collect(engine="streaming")
        seconds = time.perf_counter() - t
        rows = df.height
    else:
        import contextlib
        import runpy  # prep.py imports Polars itself (after setting its allocator options)

        sys.argv = ["prep.py", str(path), "--out", spec["out"], "--force"]
        t = time.perf_counter()
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            try:
                runpy.run_path(str(PREP), run_name="__main__")
            except SystemExit as e:
                if e.code:
                    raise RuntimeError(f"prep.py exited with {e.code}") from None
        seconds = time.perf_counter() - t
        rows = json.loads((Path(spec["out"]) / "manifest.json").read_text())["counts"]["events"]
    return {"seconds": seconds, "rows": rows, "peak_rss": peak_rss_bytes()}


def measure(case: str, path: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps({"case": case, "path": str(path), "out": str(out)})]
    r = subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV)
    if r.returncode != 0:
        sys.exit(f"{case} on {path.name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_logs(events: int, items: int, folder: Path) -> tuple[Path, Path]:
    """Generate the log once (synthetic, chunked) as CSV and Parquet; reuse it when present."""
    import polars as pl

    from longrec_core import synthetic

    users = synthetic.users_for_events(events, items=items)
    cfg = synthetic.SyntheticConfig(users=users, items=items, seed=0)
    stem = f"log-u{users}-i{items}"
    csv, parquet = folder / f"{stem}.csv", folder / f"{stem}.parquet"
    if csv.exists() and parquet.exists():
        return csv, parquet
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    print(f"generating {events:,} events ({users:,} users, {items:,} items) -> {folder}", file=sys.stderr)
    tmp_csv, tmp_parquet = csv.with_suffix(".csv.tmp"), parquet.with_suffix(".parquet.tmp")
    with open(tmp_csv, "wb") as f:
        for k, (user, item, ts) in enumerate(synthetic.chunks(cfg)):
            pl.DataFrame({"user": user, "item": item, "ts": ts}).write_csv(f, include_header=k == 0)
    synthetic.write_parquet(str(tmp_parquet), cfg)
    tmp_csv.rename(csv)
    tmp_parquet.rename(parquet)
    print(f"generated in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return csv, parquet


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def main() -> None:
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    folder = Path(args.dir)
    csv, parquet = make_logs(int(args.events), args.items, folder)
    rows = []
    for src in (csv, parquet):
        out = folder / f"data-{src.suffix[1:]}"
        base = measure("polars read", src, out)
        prep = measure("prep.py", src, out)
        size = dir_bytes(out)
        if not args.keep:
            shutil.rmtree(out)
        for case, r in (("polars read", base), ("prep.py", prep)):
            rows.append(
                (src.suffix[1:], src.stat().st_size, case, r, size if case == "prep.py" else None, base["seconds"])
            )
    n = rows[0][3]["rows"]
    print(f"prep benchmark: {n:,} events; {os.cpu_count()} CPUs; peak RSS of a fresh process per case")
    print(f"{'input':8} {'case':12} {'seconds':>8} {'Mev/s':>7} {'x read':>7} {'peak RSS':>9} {'RSS/out':>8}  notes")
    for kind, src_bytes, case, r, out_bytes, base_s in rows:
        mev = r["rows"] / r["seconds"] / 1e6
        rss = r["peak_rss"] / 2**20
        ratio = r["seconds"] / base_s
        note = f"input {src_bytes / 2**20:,.0f} MiB"
        rss_out = "-"
        if out_bytes is not None:
            rss_out = f"{r['peak_rss'] / out_bytes:.1f}x"
            note += f"; data dir {out_bytes / 2**20:,.0f} MiB"
        print(f"{kind:8} {case:12} {r['seconds']:8.2f} {mev:7.2f} {ratio:6.2f}x {rss:6,.0f} MiB {rss_out:>8}  {note}")


if __name__ == "__main__":
    main()
