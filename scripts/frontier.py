"""Runtime-aware ablation: train and evaluate a grid of windowing configurations on one data
dir, and draw what each costs in training time and tokens against what it buys in accuracy.

    python scripts/frontier.py --data data/demo --regimes last,sliding --strides 16,64 --windows 50 --epochs 3
    python scripts/frontier.py --data data/ml-1m --regimes last,sliding,mixed --strides 16,32,64,128 \\
        --windows 50,200 --max-history all,1000 --repeats 3 --epochs 200 --patience 10
    python scripts/frontier.py --data data/ml-1m --grid grid.toml        # the grid from a TOML/JSON file
    python scripts/frontier.py --data data/ml-1m --grid grid.toml        # again: finished cells are skipped,
                                                                         # failed ones are retried
    python scripts/frontier.py --data data/ml-1m --out runs/frontier-ml-1m --metric MRR --baseline last-w200

Grid axes (comma-separated; every combination is a cell): --regimes, --windows, --strides,
--max-history, --targets, --item-emb. Axes that do not matter for a regime collapse (stride for
`last` and `random`; `fresh` targets for `last` and `random`; a max history >= window+1 for
`last`), so a cell is named only by what changes it: `last-w200`, `sliding-w200-s64-hall`.
Every other flag is a train.py flag, passed to every run (`--epochs 3 --dim 32`); a grid file
(keys: regimes, windows, strides, max_history, targets, item_emb, repeats, metric, baseline, flags)
gives the same, and flags on the command line win over it.

Each seed k = 0..R-1 of a cell runs `train.py --seed k ... --out OUT/cells/CELL/seedk/run`, then
`eval.py --run that --split test`, as subprocesses of this Python; their stderr goes to
OUT/cells/CELL/seedk/stderr.log and their status to cell.json beside it. A run is finished when
its run/metrics_test.json holds its metrics; a run that was stopped (Ctrl-C, a killed
job) continues from its checkpoint (train.py --resume) when frontier.py is run again. Two or more
frontier.py processes with the same --out share its runs, each claiming one run at a time, so
`frontier.py ARGS --threads 1 & frontier.py ARGS --threads 1; wait` trains in two lanes. A grid holds at most 10,000 runs (the product of the
axes x repeats). A run that fails does not stop the grid, except when train.py refuses a value of
a passed-through flag (naming it), which would fail every run: then frontier.py stops with that
sentence (exit 2). Runtime comes from train.py's summary.json (training wall
seconds without validation, non-padding input tokens, peak memory), accuracy from eval.py's
full-catalogue test metrics. Writes OUT/frontier.csv, frontier.json, frontier.png and
frontier.svg: means over seeds ± the sample standard deviation, each cell's gain and cost
relative to its `last` baseline (the `last` cell with the same window), and the Pareto frontier
(highest metric at lowest cost). stdout: OUT.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table  # noqa: E402

from longrec_core import cli  # noqa: E402
from longrec_core.choices import ITEM_EMBS, REGIMES, TARGETS  # noqa: E402
from longrec_core.data import load_data_dir  # noqa: E402
from longrec_core.frontier import (  # noqa: E402
    DEFAULTS, Cell, baseline_of, failure_line, load_grid, make_cells, mean_sd, metric_name, pareto_mask,
    parse_axis)

SCRIPTS = Path(__file__).resolve().parent
TRAIN, EVAL = SCRIPTS / "train.py", SCRIPTS / "eval.py"
# train.py flags that frontier.py sets itself for every run
OWN_TRAIN_FLAGS = ("--data", "--out", "--resume", "--seed", "--regime", "--window", "--stride", "--max-history",
                   "--targets", "--item-emb")
# A run dir whose summary.json says this has finished training (anything else is resumed or redone).
FINISHED = ("epochs", "early_stopping", "max_train_seconds", "max_steps")
CLAIM = "lane.pid"  # in a seed dir: the pid of the frontier.py that is running it
# Far more training runs than a grid is meant to hold; more is a typo (and listing them would hang).
MAX_RUNS = 10_000

# ----------------------------------------------------------------------------- settings
p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
g = p.add_argument_group("input and output")
g.add_argument("--data", default=None, help="data dir from prep.py (default: its path read from stdin when piped)")
g.add_argument("--out", default=None, help="frontier dir; rerunning into it skips finished runs (default: runs/frontier-DATANAME)")
g.add_argument("--grid", default=None, help="grid file (.toml or .json) with any of the keys in the description; flags given here win")
g = p.add_argument_group("grid axes (comma-separated lists; defaults come from --grid, else the values shown)")
g.add_argument("--regimes", "--regime", default=None, help=f"window regimes: {', '.join(REGIMES)} (default: {DEFAULTS['regimes']})")
g.add_argument("--windows", "--window", default=None, help=f"context lengths T (default: {DEFAULTS['windows']})")
g.add_argument("--strides", "--stride", default=None, help=f"sliding/mixed: distances between window ends (default: {DEFAULTS['strides']})")
g.add_argument("--max-history", default=None, help=f"last H training events per user, or `all` (default: {DEFAULTS['max_history']})")
g.add_argument("--targets", default=None, help=f"{', '.join(TARGETS)} (default: {DEFAULTS['targets']})")
g.add_argument("--item-emb", default=None, help=f"{', '.join(ITEM_EMBS)} (default: {DEFAULTS['item_emb']})")
g = p.add_argument_group("report")
g.add_argument("--repeats", type=int, default=None, help="seeds per cell, 0..R-1; mean ± sample std over them (default: 1)")
g.add_argument("--metric", default=None, help="headline metric for the frontier and gains; MRR and HR@10 are always "
                                              "reported too; Recall@K = HR@K (default: NDCG@10)")
g.add_argument("--baseline", default=None, help="cell every cell is compared with (default: the `last` cell with the same window)")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file; None when it is missing or damaged (not JSON, or not an object)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def recorded_args(seed_dir: Path) -> list[str] | None:
    """The train.py flags a run's cell.json records; None when it is missing or damaged."""
    args = (read_json(seed_dir / "cell.json") or {}).get("train_args")
    return args if isinstance(args, list) and all(isinstance(a, str) for a in args) else None


def run_metrics(run: Path) -> dict[str, float] | None:
    """The test metrics of a finished run; None when it has none yet, or when its metrics_test.json
    is damaged (the run then counts as unfinished and is evaluated again)."""
    metrics = (read_json(run / "metrics_test.json") or {}).get("metrics")
    ok = isinstance(metrics, dict) and all(isinstance(v, (int, float)) for v in metrics.values())
    return metrics if ok else None


def claim(seed_dir: Path) -> bool:
    """Take a run for this process, so that two frontier.py lanes on one grid never train the same run:
    False while another live process holds it; a claim left by a process that is gone is taken over."""
    path = seed_dir / CLAIM
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(path.read_text() or "0")
                os.kill(holder, 0)  # raises when no such process
            except (ValueError, OSError):  # unreadable, or its process is gone: a stale claim
                path.unlink(missing_ok=True)
                continue
            return holder == os.getpid()
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        atexit.register(path.unlink, missing_ok=True)
        return True
    return False


def finite(x: float | None) -> float | None:
    """NaN -> None, so the JSON stays valid."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan  # NaN stays NaN


def si(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def main() -> None:
    args, shared = p.parse_known_args()

    # ------------------------------------------------------------------------- the grid
    # Flags win over the grid file, which wins over the defaults. Everything is checked here,
    # before any run: a typo must not cost a night of training.
    file = load_grid(args.grid) if args.grid else {}
    axes = {k: parse_axis(k, getattr(args, k) if getattr(args, k) is not None else file.get(k, DEFAULTS[k]))
            for k in DEFAULTS}
    repeats = args.repeats if args.repeats is not None else file.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        cli.fail(f"--repeats must be a positive integer, got {repeats!r}")
    points = math.prod(len(v) for v in axes.values())  # before the collapse of irrelevant axes: at least the cells
    if points * repeats > MAX_RUNS:
        cli.fail(f"the grid has {points:,} points x {repeats:,} repeats, more than {MAX_RUNS:,} runs; "
                 f"check --repeats and the axes")
    metric = metric_name(args.metric if args.metric is not None else str(file.get("metric", "NDCG@10")))
    metrics = list(dict.fromkeys([metric, "MRR", "HR@10"]))  # reported; the first is the headline
    shared = [*file.get("flags", []), *shared]  # train.py flags for every run; later ones win
    shared_flags = {tok.split("=")[0] for tok in shared if tok.startswith("--")}
    for tok in shared:
        if tok.split("=")[0] in OWN_TRAIN_FLAGS:
            cli.fail(f"{tok.split('=')[0]} is set by frontier.py for each run: use the grid axes "
                     f"(--regimes, --windows, --strides, --max-history, --targets, --item-emb), --repeats, --data or --out")
    cells = make_cells(**axes)
    names = [c.name for c in cells]
    baseline_name = args.baseline if args.baseline is not None else file.get("baseline")
    if baseline_name is not None and baseline_name not in names:
        cli.fail(f"--baseline {baseline_name} is not a cell of this grid; its cells are {', '.join(names)}")

    data = load_data_dir(cli.input_path(args.data, "data dir"))  # a bad data dir: one sentence, exit 2
    data_path = str(Path(data.path).resolve())
    out = Path(args.out) if args.out else Path("runs") / f"frontier-{Path(data_path).name}"
    if out.is_dir() and any(out.iterdir()) and not (out / "cells").is_dir() and not (out / "frontier.json").is_file():
        cli.fail(f"{out} is not empty and is not a frontier dir; pass another --out")

    def seed_dir(cell: Cell, seed: int) -> Path:
        return out / "cells" / cell.name / f"seed{seed}"

    def train_args(cell: Cell, seed: int) -> list[str]:
        """train.py's flags for one run except --out (recorded, so a rerun can tell what trained it)."""
        return ["--data", data_path, "--seed", str(seed), *cell.train_args(), *shared]

    # Finished runs are skipped; one trained with other flags would silently mix two experiments.
    todo: list[tuple[Cell, int]] = []
    for cell in cells:
        for seed in range(repeats):
            d = seed_dir(cell, seed)
            if run_metrics(d / "run") is None:
                todo.append((cell, seed))
                continue
            then = recorded_args(d)
            if then is not None and then != train_args(cell, seed):
                cli.fail(f"{d} was trained with other flags (then: {shlex.join(then)}); "
                         f"pass another --out, or delete that cell to retrain it")
    skipped = len(cells) * repeats - len(todo)

    # Unknown train.py flags would fail every run: check them against train.py --help (only
    # their names; train.py checks the values, and a bad value fails each run with its sentence).
    if todo and shared:
        help_text = subprocess.run([sys.executable, str(TRAIN), "--help"], capture_output=True, text=True,
                                   stdin=subprocess.DEVNULL).stdout
        known = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))
        for tok in shared:
            if tok.startswith("--") and tok.split("=")[0] not in known:
                cli.fail(f"{tok.split('=')[0]} is neither a frontier.py nor a train.py flag (see --help of both)")
        if not shared[0].startswith("-"):
            cli.fail(f"unexpected argument {shared[0]!r}: train.py flags start with --")

    # ------------------------------------------------------------------------- run the cells
    cli.console.print(f"frontier {out}: {len(cells)} cells x {repeats} seeds on {data_path} "
                      f"({data.n_users:,} users, {data.n_items:,} items, {data.n_events:,} events); "
                      f"skipped {skipped} finished runs, {len(todo)} to run", highlight=False, soft_wrap=True)

    def stage(cmd: list[str], log: Any) -> int:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log).returncode

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=cli.console, transient=True,
                        disable=not cli.console.is_terminal)
    t_start = time.perf_counter()
    with progress:
        bar = progress.add_task("runs", total=len(todo))
        for i, (cell, seed) in enumerate(todo, 1):
            progress.update(bar, description=f"run {i}/{len(todo)}: {cell.name} seed{seed}")
            d, targs = seed_dir(cell, seed), train_args(cell, seed)
            d.mkdir(parents=True, exist_ok=True)
            if not claim(d):
                cli.console.print(f"run {i}/{len(todo)} {cell.name} seed{seed}: another frontier.py is running it",
                                  highlight=False, markup=False, soft_wrap=True)
                progress.advance(bar)
                continue
            run = d / "run"
            # A run whose training finished with these flags only needs its evaluation; one that was
            # stopped (Ctrl-C, a killed lane) continues from its checkpoint; any other leftover (a
            # failed attempt) starts over: train.py wants an empty dir.
            same = recorded_args(d) == targs
            trained = same and (read_json(run / "summary.json") or {}).get("stop_reason") in FINISHED
            resumable = same and not trained and (run / "ckpt.pt").is_file()
            if not trained and not resumable and run.exists():
                shutil.rmtree(run)
            record: dict[str, Any] = {"cell": cell.name, "seed": seed, "status": "running", "train_args": targs}
            with cli.atomic_write(d / "cell.json") as tmp:
                tmp.write_text(json.dumps(record, indent=2))
            t0 = time.perf_counter()
            with open(d / "stderr.log", "a") as log:
                rc, failed_stage = 0, None
                if not trained:
                    how = ["--resume", str(run), *shared] if resumable else [*targs, "--out", str(run)]
                    rc = stage([sys.executable, str(TRAIN), *how], log)
                    failed_stage = "train" if rc else None
                if rc == 0:
                    rc = stage([sys.executable, str(EVAL), "--run", str(run), "--split", "test"], log)
                    failed_stage = "eval" if rc else None
            record["wall_seconds"] = time.perf_counter() - t0
            if rc == 0:
                record["status"] = "ok"
            else:
                why = (failure_line((d / "stderr.log").read_text(errors="replace"))
                       or (f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"))
                record.update(status="failed", stage=failed_stage, error=f"{failed_stage}: {why}")
            with cli.atomic_write(d / "cell.json") as tmp:
                tmp.write_text(json.dumps(record, indent=2))
            (d / CLAIM).unlink(missing_ok=True)
            # A bad value of a passed-through flag (train.py refuses it naming the flag) fails every
            # cell the same way: stop at the first. Other bad input, such as a max history too short
            # for any window, is the cell's own, and the grid goes on.
            if failed_stage == "train" and rc == cli.EXIT_BAD_INPUT and any(
                    re.search(rf"{re.escape(flag)}(?![\w-])", why) for flag in shared_flags):
                cli.fail(f"{why.removeprefix('error: ')} (train.py in cell {cell.name} seed{seed}; "
                         f"every cell would fail the same way)")

            elapsed = time.perf_counter() - t_start
            eta = elapsed / i * (len(todo) - i)
            if rc == 0:
                s = read_json(run / "summary.json") or {}
                m = run_metrics(run) or {}
                what = (f"{metric} {m.get(metric, math.nan):.4f}, {s.get('train_seconds', math.nan):.1f} s training, "
                        f"{si(s.get('tokens', 0))} tokens")
            else:
                what = f"FAILED ({record['error']}; log: {d / 'stderr.log'})"
            cli.console.print(f"run {i}/{len(todo)} {cell.name} seed{seed}: {what} "
                              f"[{record['wall_seconds']:.0f} s; elapsed {elapsed:.0f} s, ETA {eta:.0f} s]",
                              highlight=False, markup=False, soft_wrap=True)
            progress.advance(bar)

    # ------------------------------------------------------------------------- collect
    # One row per cell: means over its seeds (± sample std), as long as every seed finished.
    rows: list[dict[str, Any]] = []
    varying = {k for k, v in axes.items() if len(v) > 1}  # axes that plot labels must name
    for cell in cells:
        runs = []
        for seed in range(repeats):
            d = seed_dir(cell, seed)
            m = run_metrics(d / "run")
            if m is not None:
                s = read_json(d / "run" / "summary.json") or {}
                runs.append({"seed": seed, "status": "ok", "train_seconds": s.get("train_seconds", math.nan),
                             "tokens": s.get("tokens", math.nan), "peak_memory_bytes": s.get("peak_memory_bytes", math.nan),
                             "epochs": s.get("epochs", math.nan), "device": s.get("device"),
                             "metrics": m})
            else:
                rec = read_json(d / "cell.json") or {}
                runs.append({"seed": seed, "status": "failed", "error": rec.get("error", "not run")})
        ok = [r for r in runs if r["status"] == "ok"]
        row: dict[str, Any] = {"name": cell.name, "regime": cell.regime, "window": cell.window, "stride": cell.stride,
                               "max_history": cell.max_history, "targets": cell.targets, "item_emb": cell.item_emb,
                               "label": cell.label(varying),
                               "status": "ok" if len(ok) == repeats else "failed", "seeds_ok": len(ok),
                               "error": next((r["error"] for r in runs if r["status"] != "ok"), None), "mean": {}, "sd": {}}
        for key in [*metrics, "train_seconds", "tokens", "epochs"]:
            vals = [r["metrics"].get(key, math.nan) if key in metrics else r[key] for r in ok]
            row["mean"][key], row["sd"][key] = mean_sd(vals)
        row["peak_memory_bytes"] = max((r["peak_memory_bytes"] for r in ok), default=math.nan)
        row["runs"] = runs
        rows.append(row)
    by_name = {r["name"]: r for r in rows}

    # Relative to the baseline: "+x% metric at y x time".
    for cell, row in zip(cells, rows):
        if baseline_name is not None:
            base: dict[str, Any] | None = by_name[baseline_name]
        else:
            b = baseline_of(cell, cells)
            base = by_name[b.name] if b is not None else None
        row["baseline"] = base["name"] if base else None
        if base is None or row["status"] != "ok" or base["status"] != "ok":
            row["gain"], row["time_x"], row["tokens_x"] = dict.fromkeys(metrics, math.nan), math.nan, math.nan
            continue
        row["gain"] = {m: ratio(row["mean"][m], base["mean"][m]) - 1 for m in metrics}
        row["time_x"] = ratio(row["mean"]["train_seconds"], base["mean"]["train_seconds"])
        row["tokens_x"] = ratio(row["mean"]["tokens"], base["mean"]["tokens"])

    baseline_names = {r["baseline"] for r in rows}

    # Pareto frontier of the headline metric against each cost, over the cells that finished.
    done = [r for r in rows if r["status"] == "ok"]
    for cost in ("train_seconds", "tokens"):
        mask = pareto_mask([r["mean"][cost] for r in done], [r["mean"][metric] for r in done])
        for r in rows:
            r[f"pareto_{cost}"] = False
        for r, on in zip(done, mask):
            r[f"pareto_{cost}"] = bool(on)

    # ------------------------------------------------------------------------- write
    report = {"data": data_path, "out": str(out), "metric": metric, "metrics": metrics, "repeats": repeats,
              "spread": "sample standard deviation over seeds (ddof=1); null with one seed",
              "grid": axes, "flags": shared}

    def scrub(x: Any) -> Any:  # NaN -> null, recursively
        if isinstance(x, dict):
            return {k: scrub(v) for k, v in x.items()}
        if isinstance(x, list):
            return [scrub(v) for v in x]
        return finite(x)

    report["cells"] = scrub(rows)
    out.mkdir(parents=True, exist_ok=True)
    with cli.atomic_write(out / "frontier.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    columns = ["name", "regime", "window", "stride", "max_history", "targets", "item_emb", "status", "seeds_ok"]
    columns += [c for m in metrics for c in (m, f"{m}_sd")]
    columns += ["train_seconds", "train_seconds_sd", "tokens", "epochs", "peak_memory_bytes", "baseline"]
    columns += [f"gain_{m}" for m in metrics] + ["time_x", "tokens_x", "pareto_train_seconds", "pareto_tokens", "error"]
    with cli.atomic_write(out / "frontier.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            flat = {**r, **{m: r["mean"][m] for m in metrics}, **{f"{m}_sd": r["sd"][m] for m in metrics},
                    "train_seconds": r["mean"]["train_seconds"], "train_seconds_sd": r["sd"]["train_seconds"],
                    "tokens": r["mean"]["tokens"], "epochs": r["mean"]["epochs"],
                    **{f"gain_{m}": r["gain"][m] for m in metrics}}
            w.writerow({c: "" if finite(flat[c]) is None else flat[c] for c in columns})

    # ------------------------------------------------------------------------- table (stderr)
    def pm(row: dict[str, Any], key: str, fmt: str) -> str:
        if row["status"] != "ok":
            return "-"
        sd = row["sd"][key]
        return format(row["mean"][key], fmt) + ("" if math.isnan(sd) else f" ± {format(sd, fmt)}")

    def rel(x: float, fmt: str) -> str:
        return "" if math.isnan(x) else format(x, fmt)

    table = Table(title=f"{out}: test metrics, mean{' ± sample std' if repeats > 1 else ''} over {repeats} seed(s); "
                        f"gains and costs vs. each cell's baseline", title_justify="left")
    for col in ["cell", "seeds", *metrics, "train s", "tokens", "peak MiB", f"Δ {metric}", "time ×", "tokens ×", "frontier"]:
        table.add_column(col, justify="left" if col == "cell" else "right", no_wrap=True)
    for r in rows:
        front = ", ".join(k for k, c in (("time", "pareto_train_seconds"), ("tokens", "pareto_tokens")) if r[c])
        table.add_row(r["name"] + (" (baseline)" if r["name"] in baseline_names else ""),
                      f"{r['seeds_ok']}/{repeats}" + ("" if r["status"] == "ok" else " failed"),
                      *[pm(r, m, ".4f") for m in metrics], pm(r, "train_seconds", ".1f"),
                      si(r["mean"]["tokens"]) if r["status"] == "ok" else "-",
                      f"{r['peak_memory_bytes'] / 2**20:,.0f}" if r["status"] == "ok" else "-",
                      rel(r["gain"][metric], "+.1%"), rel(r["time_x"], ".2f"), rel(r["tokens_x"], ".2f"), front)
    wide = cli.console if cli.console.is_terminal else Console(stderr=True, width=200)
    wide.print(table)
    for r in rows:
        if r["status"] == "ok" and r["baseline"] and r["baseline"] != r["name"] and not math.isnan(r["time_x"]):
            gains = ", ".join(f"{r['gain'][m]:+.1%} {m}" for m in metrics)
            cli.console.print(f"{r['name']}: {gains} at {r['time_x']:.2f}× time, {r['tokens_x']:.2f}× tokens "
                              f"vs. {r['baseline']}", highlight=False, markup=False, soft_wrap=True)
        elif r["status"] != "ok":
            cli.console.print(f"{r['name']}: failed: {r['error']}", highlight=False, markup=False, soft_wrap=True)

    # ------------------------------------------------------------------------- plot
    if done:
        title = (f"{Path(data_path).name}: test metrics vs. training cost, {len(done)} cells"
                 + (f", mean ± sample std over {repeats} seeds" if repeats > 1 else ""))
        fig = draw(done, metrics, [r for r in done if r["name"] in baseline_names], title)
        for fmt in ("png", "svg"):
            with cli.atomic_write(out / f"frontier.{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=130)
        plt.close(fig)
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    if failed and not done:
        cli.console.print(f"every cell failed; see {out}/cells/*/seed*/stderr.log", highlight=False, soft_wrap=True)
        raise SystemExit(1)
    if failed:
        cli.console.print(f"{len(failed)} of {len(rows)} cells failed (a rerun retries them): {', '.join(failed)}",
                          highlight=False, soft_wrap=True)
    print(out, flush=True)


STYLE = {"last": ("s", "black"), "sliding": ("o", "tab:blue"), "mixed": ("^", "tab:green"), "random": ("D", "tab:orange")}


def draw(done: list[dict[str, Any]], metrics: list[str], baselines: list[dict[str, Any]], title: str) -> Any:
    """One panel per (metric, cost) over the finished cells `done`: a marker per cell (error bars =
    sample std over seeds), its label, the Pareto frontier (steps: the best metric reachable at each
    cost) and a reference line per baseline."""
    fig, axs = plt.subplots(len(metrics), 2, figsize=(12, 3.8 * len(metrics)), squeeze=False, constrained_layout=True)
    for i, m in enumerate(metrics):
        for j, (cost, xlabel) in enumerate((("train_seconds", "training time (s, validation excluded)"),
                                            ("tokens", "tokens processed (non-padding inputs)"))):
            ax = axs[i][j]
            x = np.array([r["mean"][cost] for r in done])
            y = np.array([r["mean"][m] for r in done])
            xerr = np.nan_to_num([r["sd"][cost] for r in done]) if cost == "train_seconds" else None
            yerr = np.nan_to_num([r["sd"][m] for r in done])
            for regime, (marker, color) in STYLE.items():
                k = np.array([r["regime"] == regime for r in done])
                if k.any():
                    ax.errorbar(x[k], y[k], yerr=yerr[k], xerr=None if xerr is None else xerr[k], fmt=marker,
                                color=color, ms=6, capsize=2, lw=1, label=regime, zorder=3)
            for r, xi, yi in zip(done, x, y):  # the costliest point's label goes left, inside the panel
                right = xi == x.max() and len(x) > 1
                ax.annotate(r["label"], (xi, yi), textcoords="offset points", xytext=(-5 if right else 5, 4),
                            ha="right" if right else "left", fontsize=8)
            front = pareto_mask(x, y)
            order = np.argsort(x[front])
            ax.plot(x[front][order], y[front][order], drawstyle="steps-post", ls="--", color="tab:red", lw=1,
                    label="Pareto frontier", zorder=2)
            for b in baselines:
                ax.axhline(b["mean"][m], color="gray", ls=":", lw=1, zorder=1)
                ax.annotate(f"{b['name']} (baseline)", (0.99, b["mean"][m]), xycoords=("axes fraction", "data"),
                            textcoords="offset points", xytext=(0, -3), ha="right", va="top", fontsize=7, color="gray")
            if x.min() > 0 and x.max() / x.min() > 10:  # costs spanning decades: log axis, ticks at 1-2-5
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(EngFormatter(sep="") if cost == "tokens" else FuncFormatter(lambda v, _: f"{v:g}"))
            ax.margins(x=0.12, y=0.15)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"test {m}")
            ax.grid(alpha=0.3)
    axs[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return fig


if __name__ == "__main__":
    cli.stage_main(main)
