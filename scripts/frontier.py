"""Runtime-aware ablation: train and evaluate a grid of windowing configurations on one data
dir, and draw what each costs in training time and tokens against what it buys in accuracy.

    python scripts/frontier.py --data data/demo --regimes last,sliding --strides 16,64 --windows 50 --epochs 3
    python scripts/frontier.py --data data/ml-1m --regimes last,sliding,mixed --strides 16,32,64,128 \\
        --windows 50,200 --max-history all,1000 --repeats 3 --epochs 200 --patience 10
    python scripts/frontier.py --data data/ml-1m --grid grid.toml        # the grid from a TOML/JSON file
    python scripts/frontier.py --data data/ml-1m --grid grid.toml        # again: finished cells are skipped,
                                                                         # failed ones are retried
    python scripts/frontier.py --data data/ml-1m --out runs/frontier-ml-1m --metric MRR --baseline last-w200
    python scripts/frontier.py --data data/ml-1m --grid grid.toml --report-only  # tables and plots of the runs
                                                                         # finished so far (while lanes train)

Grid axes (comma-separated; every combination is a cell): --regimes, --windows, --strides,
--max-history, --targets, --item-emb. Axes that do not matter for a regime collapse (stride for
`last` and `random`; `fresh` targets for `last` and `random`; a max history >= window+1 for
`last`), so a cell is named only by what changes it: `last-w200`, `sliding-w200-s64`,
`sliding-w200-s64-maxhist1000` (a max history of 1,000 events).
Every other flag is a train.py flag, passed to every run (`--epochs 3 --dim 32`); a grid file
(keys: regimes, windows, strides, max_history, targets, item_emb, repeats, metric, baseline, flags)
gives the same, and flags on the command line win over it.

Each seed k = 0..R-1 of a cell runs `train.py --seed k ... --out OUT/cells/CELL/seedk/run`, then
`eval.py --run that --split test`, as subprocesses of this Python; their stderr goes to
OUT/cells/CELL/seedk/stderr.log and their status to cell.json beside it. A run is finished when
its run/metrics_test.json holds its metrics; a run that was stopped (Ctrl-C, a killed
job) continues from its checkpoint (train.py --resume) when frontier.py is run again. Two or more
frontier.py processes with the same --out share its runs, each claiming one run at a time, so
`frontier.py ARGS --threads 1 & frontier.py ARGS --threads 1; wait` trains in two lanes. A grid
holds at most 10,000 runs (the product of the axes x repeats). Passed-through flags are parsed with
train.py's own declaration (longrec_core/train_flags.py) before any run, so an unknown flag or a bad
choice exits 2 at once.
A run that fails does not stop the grid, except when train.py refuses a value of a passed-through
flag (naming it; a range, such as --lr -1), which would fail every run: then frontier.py stops with
that sentence (exit 2). Runtime comes from train.py's summary.json (training wall
seconds without validation, non-padding input tokens, peak memory), accuracy from eval.py's
full-catalogue test metrics. Writes OUT/frontier.csv, frontier.json, frontier.png and
frontier.svg: means over seeds ± the sample standard deviation, each cell's gain and cost
relative to its `last` baseline (the `last` cell with the same window), and the Pareto frontier
(highest metric at lowest cost); and OUT/curves.png and curves.svg: each run's best validation
metric so far against its training time (which regime leads at a given budget). stdout: OUT.
"""

from __future__ import annotations

# First, before torch and polars load: Ctrl-C or SIGTERM while they do ends the stage quietly (exit 130).
import longrec_core.startup  # noqa: F401  # isort: skip

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter
from rich.console import Console
from rich.table import Table

from longrec_core import cli
from longrec_core.choices import ITEM_EMBS, REGIMES, TARGETS
from longrec_core.datadir import DataDir, load_data_dir
from longrec_core.frontier import (
    DEFAULTS,
    Cell,
    baseline_of,
    cell_dir,
    failure_line,
    load_grid,
    make_cells,
    mean_sd,
    metric_name,
    pareto_mask,
    parse_axis,
    time_unit,
    validation_curve,
    without_speed_flags,
)
from longrec_core.runs import finished as training_finished
from longrec_core.train_flags import add_train_flags, flag_names

SCRIPTS = Path(__file__).resolve().parent
TRAIN, EVAL = SCRIPTS / "train.py", SCRIPTS / "eval.py"
# train.py flags that frontier.py sets itself for every run
OWN_TRAIN_FLAGS = (
    "--data",
    "--out",
    "--resume",
    "--seed",
    "--regime",
    "--window",
    "--stride",
    "--max-history",
    "--targets",
    "--item-emb",
)
CLAIM = "lane.pid"  # in a seed dir: the pid of the frontier.py that is running it
# Far more training runs than a grid is meant to hold; more is a typo (and listing them would hang).
MAX_RUNS = 10_000

# ----------------------------------------------------------------------------- settings
p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
g = p.add_argument_group("input and output")
g.add_argument("--data", default=None, help="data dir from prep.py (default: its path read from stdin when piped)")
g.add_argument(
    "--out", default=None, help="frontier dir; rerunning into it skips finished runs (default: runs/frontier-DATANAME)"
)
g.add_argument(
    "--grid",
    default=None,
    help="grid file (.toml or .json) with any of the keys in the description; flags given here win",
)
g = p.add_argument_group("grid axes (comma-separated lists; defaults come from --grid, else the values shown)")
g.add_argument(
    "--regimes", "--regime", default=None, help=f"window regimes: {', '.join(REGIMES)} (default: {DEFAULTS['regimes']})"
)
g.add_argument("--windows", "--window", default=None, help=f"context lengths T (default: {DEFAULTS['windows']})")
g.add_argument(
    "--strides",
    "--stride",
    default=None,
    help=f"sliding/mixed: distances between window ends (default: {DEFAULTS['strides']})",
)
g.add_argument(
    "--max-history",
    default=None,
    help=f"last H training events per user, or `all` (default: {DEFAULTS['max_history']})",
)
g.add_argument("--targets", default=None, help=f"{', '.join(TARGETS)} (default: {DEFAULTS['targets']})")
g.add_argument("--item-emb", default=None, help=f"{', '.join(ITEM_EMBS)} (default: {DEFAULTS['item_emb']})")
g = p.add_argument_group("report")
g.add_argument(
    "--repeats", type=int, default=None, help="seeds per cell, 0..R-1; mean ± sample std over them (default: 1)"
)
g.add_argument(
    "--metric",
    default=None,
    help="headline metric for the frontier and gains; MRR and HR@10 are always "
    "reported too; Recall@K = HR@K (default: NDCG@10)",
)
g.add_argument(
    "--baseline", default=None, help="cell every cell is compared with (default: the `last` cell with the same window)"
)
g.add_argument(
    "--report-only",
    action="store_true",
    help="train nothing: write the tables and plots from the runs finished so far (a grid that other "
    "frontier.py processes are training; with --repeats 1, seed 0 of every cell)",
)


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


def claim_holder(seed_dir: Path) -> int | None:
    """The live process that holds a run's claim; None when nobody does (or its holder is gone)."""
    try:
        holder = int((seed_dir / CLAIM).read_text() or "0")
        if holder <= 0:  # empty or damaged (a pid of 0 would name this process group)
            return None
        os.kill(holder, 0)  # raises when no such process
    except (ValueError, OSError):
        return None
    return holder


def claim(seed_dir: Path) -> bool:
    """Take a run for this process, so that two frontier.py lanes on one grid never train the same run:
    False while another live process holds it; a claim left by a process that is gone is taken over."""
    path = seed_dir / CLAIM
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = claim_holder(seed_dir)
            if holder is None:  # unreadable, or its process is gone: a stale claim
                path.unlink(missing_ok=True)
                continue
            return holder == os.getpid()
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        atexit.register(path.unlink, missing_ok=True)
        return True
    return False


class PassedThroughParser(cli.ArgumentParser):
    """train.py's flags as frontier.py passes them to every run: a bad one is named as train.py's."""

    def error(self, message: str) -> NoReturn:
        cli.fail(f"{message} (a train.py flag, passed to every run; see train.py --help)")


def check_train_flags(shared: list[str]) -> None:
    """Refuse, before any run, what would fail every run: a flag train.py does not have, a value its
    declaration refuses (a choice, a number), or a stray argument. Ranges and combinations are
    train.py's to check (check_settings): a bad one fails the first run and stops the grid."""
    if not shared:
        return
    parser = PassedThroughParser(prog="train.py", allow_abbrev=False)
    add_train_flags(parser)
    known = flag_names(parser)
    for tok in shared:
        if tok.startswith("--") and tok.split("=")[0] not in known:
            cli.fail(f"{tok.split('=')[0]} is neither a frontier.py nor a train.py flag (see --help of both)")
    if not shared[0].startswith("-"):
        cli.fail(f"unexpected argument {shared[0]!r}: train.py flags start with --")
    parser.parse_args(shared)


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


@dataclass
class Grid:
    """What the grid runs, checked before any run: its cells, seeds, metrics and shared train.py flags."""

    axes: dict[str, list[Any]]
    repeats: int
    metric: str  # the headline metric
    metrics: list[str]  # reported; the first is the headline
    shared: list[str]  # train.py flags for every run
    cells: list[Cell]
    baseline: str | None  # the cell every cell is compared with; None: each cell's `last` cell

    @property
    def shared_flags(self) -> set[str]:
        return {tok.split("=")[0] for tok in self.shared if tok.startswith("--")}


@dataclass
class Where:
    """Where the grid reads and writes."""

    data: DataDir
    data_path: str  # absolute
    out: Path

    def seed_dir(self, cell: Cell, seed: int) -> Path:
        return self.seed_dir_of(cell.name, seed)

    def seed_dir_of(self, cell_name: str, seed: int) -> Path:
        return cell_dir(self.out, cell_name) / f"seed{seed}"


def read_grid(args: argparse.Namespace, shared: list[str]) -> Grid:
    """The grid from the flags, which win over the grid file, which wins over the defaults. Everything
    is checked here, before any run: a typo must not cost a night of training."""
    file = load_grid(args.grid) if args.grid else {}
    axes = {
        k: parse_axis(k, getattr(args, k) if getattr(args, k) is not None else file.get(k, DEFAULTS[k]))
        for k in DEFAULTS
    }
    repeats = args.repeats if args.repeats is not None else file.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        cli.fail(f"--repeats must be a positive integer, got {repeats!r}")
    points = math.prod(len(v) for v in axes.values())  # before the collapse of irrelevant axes: at least the cells
    if points * repeats > MAX_RUNS:
        cli.fail(
            f"the grid has {points:,} points x {repeats:,} repeats, more than {MAX_RUNS:,} runs; "
            f"check --repeats and the axes"
        )
    metric = metric_name(args.metric if args.metric is not None else str(file.get("metric", "NDCG@10")))
    shared = [*file.get("flags", []), *shared]  # later ones win
    for tok in shared:
        if tok.split("=")[0] in OWN_TRAIN_FLAGS:
            cli.fail(
                f"{tok.split('=')[0]} is set by frontier.py for each run: use the grid axes "
                f"(--regimes, --windows, --strides, --max-history, --targets, --item-emb), --repeats, --data or --out"
            )
    check_train_flags(shared)
    cells = make_cells(**axes)
    names = [c.name for c in cells]
    baseline = args.baseline if args.baseline is not None else file.get("baseline")
    if baseline is not None and baseline not in names:
        cli.fail(f"--baseline {baseline} is not a cell of this grid; its cells are {', '.join(names)}")
    return Grid(axes, repeats, metric, list(dict.fromkeys([metric, "MRR", "HR@10"])), shared, cells, baseline)


def open_out(args: argparse.Namespace) -> Where:
    """The data dir (a bad one: one sentence, exit 2) and the frontier dir, refused when it holds
    something else."""
    data = load_data_dir(cli.input_path(args.data, "data dir"))
    data_path = str(Path(data.path).resolve())
    out = Path(args.out) if args.out else Path("runs") / f"frontier-{Path(data_path).name}"
    if out.is_dir() and any(out.iterdir()) and not (out / "cells").is_dir() and not (out / "frontier.json").is_file():
        cli.fail(f"{out} is not empty and is not a frontier dir; pass another --out")
    return Where(data, data_path, out)


def train_args(where: Where, grid: Grid, cell: Cell, seed: int) -> list[str]:
    """train.py's flags for one run except --out (recorded, so a rerun can tell what trained it)."""
    return ["--data", where.data_path, "--seed", str(seed), *cell.train_args(), *grid.shared]


def plan_runs(grid: Grid, where: Where) -> list[tuple[Cell, int]]:
    """The runs to do: every (cell, seed) without test metrics, seed-major (every cell's seed 0
    first), so a grid stopped part-way has one comparable seed of each cell. Finished runs are
    skipped; one trained with other flags is refused, since it would silently mix two experiments
    (flags that change only speed, such as --threads, may differ: SPEED_ONLY_FLAGS)."""
    todo: list[tuple[Cell, int]] = []
    for seed in range(grid.repeats):
        for cell in grid.cells:
            d = where.seed_dir(cell, seed)
            if run_metrics(d / "run") is None:
                todo.append((cell, seed))
                continue
            then = recorded_args(d)
            if then is not None and without_speed_flags(then) != without_speed_flags(
                train_args(where, grid, cell, seed)
            ):
                cli.fail(
                    f"{d} was trained with other flags (then: {shlex.join(then)}); "
                    f"pass another --out, or delete that cell to retrain it"
                )
    return todo


def stage(cmd: list[str], log: Any) -> int:
    """Run one stage with its stderr appended to `log` after a `$ command` line; its exit status."""
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log).returncode


def write_record(d: Path, record: dict[str, Any]) -> None:
    with cli.atomic_write(d / "cell.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def run_one(d: Path, cell: Cell, seed: int, targs: list[str], shared: list[str]) -> tuple[dict[str, Any], int]:
    """Train (or resume) and evaluate one claimed run in seed dir `d`: its cell.json record and the
    exit status of its last stage.

    A run whose training finished with these flags only needs its evaluation; one that was stopped
    (Ctrl-C, a killed lane) continues from its checkpoint; any other leftover (a failed attempt)
    starts over: train.py wants an empty dir."""
    run = d / "run"
    then = recorded_args(d)
    same = then is not None and without_speed_flags(then) == without_speed_flags(targs)
    trained = same and training_finished(run) is not None  # anything else is resumed or redone
    resumable = same and not trained and (run / "ckpt.pt").is_file()
    if not trained and not resumable and run.exists():
        shutil.rmtree(run)
    record: dict[str, Any] = {"cell": cell.name, "seed": seed, "status": "running", "train_args": targs}
    write_record(d, record)
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
        why = failure_line((d / "stderr.log").read_text(errors="replace")) or (
            f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        )
        record.update(status="failed", stage=failed_stage, error=f"{failed_stage}: {why}")
    write_record(d, record)
    (d / CLAIM).unlink(missing_ok=True)
    return record, rc


def stop_if_every_run_would_fail(record: dict[str, Any], rc: int, grid: Grid, cell: Cell, seed: int) -> None:
    """A bad value of a passed-through flag (train.py refuses it naming the flag) fails every cell the
    same way: stop at the first. Other bad input, such as a max history too short for any window, is
    the cell's own, and the grid goes on."""
    if record.get("stage") != "train" or rc != cli.EXIT_BAD_INPUT:
        return
    why = record["error"].removeprefix("train: ")
    if any(re.search(rf"{re.escape(flag)}(?![\w-])", why) for flag in grid.shared_flags):
        cli.fail(
            f"{why.removeprefix('error: ')} (train.py in cell {cell.name} seed{seed}; "
            f"every cell would fail the same way)"
        )


def run_line(record: dict[str, Any], d: Path, metric: str) -> str:
    """What one run gave: its headline metric and training cost, or why it failed."""
    if record["status"] == "ok":
        s = read_json(d / "run" / "summary.json") or {}
        m = run_metrics(d / "run") or {}
        return (
            f"{metric} {m.get(metric, math.nan):.4f}, {s.get('train_seconds', math.nan):.1f} s training, "
            f"{si(s.get('tokens', 0))} tokens"
        )
    return f"FAILED ({record['error']}; log: {d / 'stderr.log'})"


def run_all(grid: Grid, where: Where, todo: list[tuple[Cell, int]]) -> None:
    """Run the planned runs one after another, each claimed first so that another frontier.py on the
    same --out never runs it too; a line per run on stderr."""
    t_start = time.perf_counter()
    with cli.progress(eta=True) as progress:
        bar = progress.add_task("runs", total=len(todo))
        for i, (cell, seed) in enumerate(todo, 1):
            progress.update(bar, description=f"run {i}/{len(todo)}: {cell.name} seed{seed}")
            d = where.seed_dir(cell, seed)
            d.mkdir(parents=True, exist_ok=True)
            held = not claim(d)
            done = not held and run_metrics(d / "run") is not None  # another lane finished it after the plan
            if done:
                (d / CLAIM).unlink(missing_ok=True)
            if held or done:
                cli.console.print(
                    f"run {i}/{len(todo)} {cell.name} seed{seed}: another frontier.py "
                    + ("is running it" if held else "finished it"),
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
                progress.advance(bar)
                continue
            record, rc = run_one(d, cell, seed, train_args(where, grid, cell, seed), grid.shared)
            stop_if_every_run_would_fail(record, rc, grid, cell, seed)
            elapsed = time.perf_counter() - t_start
            eta = elapsed / i * (len(todo) - i)
            cli.console.print(
                f"run {i}/{len(todo)} {cell.name} seed{seed}: {run_line(record, d, grid.metric)} "
                f"[{record['wall_seconds']:.0f} s; elapsed {elapsed:.0f} s, ETA {eta:.0f} s]",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            progress.advance(bar)


def seed_runs(grid: Grid, where: Where, cell: Cell) -> list[dict[str, Any]]:
    """Each seed of a cell from its files: costs and metrics when it finished, "elsewhere" while
    another frontier.py on the same --out trains it, its error when it failed, else "unfinished"
    (not run yet: a grid that is still training, seen with --report-only)."""
    runs = []
    for seed in range(grid.repeats):
        d = where.seed_dir(cell, seed)
        m = run_metrics(d / "run")
        if m is not None:
            s = read_json(d / "run" / "summary.json") or {}
            runs.append(
                {
                    "seed": seed,
                    "status": "ok",
                    "train_seconds": s.get("train_seconds", math.nan),
                    "tokens": s.get("tokens", math.nan),
                    "peak_memory_bytes": s.get("peak_memory_bytes", math.nan),
                    "epochs": s.get("epochs", math.nan),
                    "device": s.get("device"),
                    "metrics": m,
                }
            )
        elif claim_holder(d) not in (None, os.getpid()):
            runs.append({"seed": seed, "status": "elsewhere", "error": "another frontier.py is training it"})
        else:
            rec = read_json(d / "cell.json") or {}
            if rec.get("status") == "failed":
                runs.append({"seed": seed, "status": "failed", "error": rec.get("error", "failed")})
            else:
                runs.append({"seed": seed, "status": "unfinished", "error": "not run yet"})
    return runs


def cell_status(runs: list[dict[str, Any]]) -> str:
    """A cell without every seed: "failed" when a run failed, "unfinished" when one has not run,
    else "elsewhere" (its unfinished runs are being trained by another frontier.py)."""
    for status in ("failed", "unfinished"):
        if any(r["status"] == status for r in runs):
            return status
    return "elsewhere"


def collect(grid: Grid, where: Where) -> list[dict[str, Any]]:
    """One row per cell: means over its seeds (± sample std), as long as every seed finished."""
    rows: list[dict[str, Any]] = []
    varying = {k for k, v in grid.axes.items() if len(v) > 1}  # axes that plot labels must name
    for cell in grid.cells:
        runs = seed_runs(grid, where, cell)
        ok = [r for r in runs if r["status"] == "ok"]
        row: dict[str, Any] = {
            "name": cell.name,
            "regime": cell.regime,
            "window": cell.window,
            "stride": cell.stride,
            "max_history": cell.max_history,
            "targets": cell.targets,
            "item_emb": cell.item_emb,
            "label": cell.label(varying),
            "status": "ok" if len(ok) == grid.repeats else cell_status(runs),
            "seeds_ok": len(ok),
            "error": next((r["error"] for r in runs if r["status"] != "ok"), None),
            "mean": {},
            "sd": {},
        }
        for key in [*grid.metrics, "train_seconds", "tokens", "epochs"]:
            vals = [r["metrics"].get(key, math.nan) if key in grid.metrics else r[key] for r in ok]
            row["mean"][key], row["sd"][key] = mean_sd(vals)
        row["peak_memory_bytes"] = max((r["peak_memory_bytes"] for r in ok), default=math.nan)
        row["runs"] = runs
        rows.append(row)
    return rows


def compare_with_baselines(grid: Grid, rows: list[dict[str, Any]]) -> None:
    """Each row relative to its baseline ("+x% metric at y x time"), in place."""
    by_name = {r["name"]: r for r in rows}
    for cell, row in zip(grid.cells, rows):
        if grid.baseline is not None:
            base: dict[str, Any] | None = by_name[grid.baseline]
        else:
            b = baseline_of(cell, grid.cells)
            base = by_name[b.name] if b is not None else None
        row["baseline"] = base["name"] if base else None
        if base is None or row["status"] != "ok" or base["status"] != "ok":
            row["gain"], row["time_x"], row["tokens_x"] = dict.fromkeys(grid.metrics, math.nan), math.nan, math.nan
            continue
        row["gain"] = {m: ratio(row["mean"][m], base["mean"][m]) - 1 for m in grid.metrics}
        row["time_x"] = ratio(row["mean"]["train_seconds"], base["mean"]["train_seconds"])
        row["tokens_x"] = ratio(row["mean"]["tokens"], base["mean"]["tokens"])


def mark_pareto(rows: list[dict[str, Any]], metric: str) -> None:
    """Pareto frontier of the headline metric against each cost, over the cells that finished, in place."""
    done = [r for r in rows if r["status"] == "ok"]
    for cost in ("train_seconds", "tokens"):
        mask = pareto_mask([r["mean"][cost] for r in done], [r["mean"][metric] for r in done])
        for r in rows:
            r[f"pareto_{cost}"] = False
        for r, on in zip(done, mask):
            r[f"pareto_{cost}"] = bool(on)


def scrub(x: Any) -> Any:
    """NaN -> None, recursively, so the JSON stays valid."""
    if isinstance(x, dict):
        return {k: scrub(v) for k, v in x.items()}
    if isinstance(x, list):
        return [scrub(v) for v in x]
    return finite(x)


def write_tables(grid: Grid, where: Where, rows: list[dict[str, Any]]) -> None:
    """OUT/frontier.json (everything) and OUT/frontier.csv (one flat line per cell)."""
    out, metrics = where.out, grid.metrics
    report = {
        "data": where.data_path,
        "out": str(out),
        "metric": grid.metric,
        "metrics": metrics,
        "repeats": grid.repeats,
        "spread": "sample standard deviation over seeds (ddof=1); null with one seed",
        "grid": grid.axes,
        "flags": grid.shared,
        "cells": scrub(rows),
    }
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
            flat = {
                **r,
                **{m: r["mean"][m] for m in metrics},
                **{f"{m}_sd": r["sd"][m] for m in metrics},
                "train_seconds": r["mean"]["train_seconds"],
                "train_seconds_sd": r["sd"]["train_seconds"],
                "tokens": r["mean"]["tokens"],
                "epochs": r["mean"]["epochs"],
                **{f"gain_{m}": r["gain"][m] for m in metrics},
            }
            w.writerow({c: "" if finite(flat[c]) is None else flat[c] for c in columns})


def pm(row: dict[str, Any], key: str, fmt: str) -> str:
    """mean ± sample std of a finished row, else '-'."""
    if row["status"] != "ok":
        return "-"
    sd = row["sd"][key]
    return format(row["mean"][key], fmt) + ("" if math.isnan(sd) else f" ± {format(sd, fmt)}")


def rel(x: float, fmt: str) -> str:
    return "" if math.isnan(x) else format(x, fmt)


def print_table(grid: Grid, out: Path, rows: list[dict[str, Any]], baseline_names: set[str]) -> None:
    """The cells on stderr: metrics, costs, gains against the baseline, frontier membership; then one
    line per cell naming its gain and cost, or its failure."""
    metric, metrics, repeats = grid.metric, grid.metrics, grid.repeats
    table = Table(
        title=f"{out}: test metrics, mean{' ± sample std' if repeats > 1 else ''} over {repeats} seed(s); "
        f"gains and costs vs. each cell's baseline",
        title_justify="left",
    )
    for col in [
        "cell",
        "seeds",
        *metrics,
        "train s",
        "tokens",
        "peak MiB",
        f"Δ {metric}",
        "time ×",
        "tokens ×",
        "frontier",
    ]:
        table.add_column(col, justify="left" if col == "cell" else "right", no_wrap=True)
    for r in rows:
        front = ", ".join(k for k, c in (("time", "pareto_train_seconds"), ("tokens", "pareto_tokens")) if r[c])
        table.add_row(
            r["name"] + (" (baseline)" if r["name"] in baseline_names else ""),
            f"{r['seeds_ok']}/{repeats}" + ("" if r["status"] == "ok" else f" {r['status']}"),
            *[pm(r, m, ".4f") for m in metrics],
            pm(r, "train_seconds", ".1f"),
            si(r["mean"]["tokens"]) if r["status"] == "ok" else "-",
            f"{r['peak_memory_bytes'] / 2**20:,.0f}" if r["status"] == "ok" else "-",
            rel(r["gain"][metric], "+.1%"),
            rel(r["time_x"], ".2f"),
            rel(r["tokens_x"], ".2f"),
            front,
        )
    wide = cli.console if cli.console.is_terminal else Console(stderr=True, width=200)
    wide.print(table)
    for r in rows:
        if r["status"] == "ok" and r["baseline"] and r["baseline"] != r["name"] and not math.isnan(r["time_x"]):
            gains = ", ".join(f"{r['gain'][m]:+.1%} {m}" for m in metrics)
            cli.console.print(
                f"{r['name']}: {gains} at {r['time_x']:.2f}× time, {r['tokens_x']:.2f}× tokens vs. {r['baseline']}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        elif r["status"] != "ok":
            line = f"{r['name']}: {r['status']}: {r['error']}"
            cli.console.print(line, highlight=False, markup=False, soft_wrap=True)


def write_plots(grid: Grid, where: Where, done: list[dict[str, Any]], baseline_names: set[str]) -> None:
    """OUT/frontier.png and .svg over the finished cells."""
    title = f"{Path(where.data_path).name}: test metrics vs. training cost, {len(done)} cells" + (
        f", mean ± sample std over {grid.repeats} seeds" if grid.repeats > 1 else ""
    )
    fig = draw(done, grid.metrics, [r for r in done if r["name"] in baseline_names], title)
    for fmt in ("png", "svg"):
        with cli.atomic_write(where.out / f"frontier.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=130)
    plt.close(fig)


def write_curves(grid: Grid, where: Where, rows: list[dict[str, Any]]) -> None:
    """OUT/curves.png and .svg: the best validation metric so far against training time (in seconds,
    minutes or hours, by the longest run), a line per seed of every cell (finished or still
    training), to pick the regime for a given budget."""
    curves = {
        row["name"]: [
            validation_curve(where.seed_dir_of(row["name"], seed) / "run", grid.metric) for seed in range(grid.repeats)
        ]
        for row in rows
    }
    longest = max((c[0][-1] for cs in curves.values() for c in cs if c is not None), default=0.0)
    per_unit, unit = time_unit(longest)
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    drawn = 0
    for k, row in enumerate(rows):
        color = STYLE[row["regime"]][1]
        for i, curve in enumerate(c for c in curves[row["name"]] if c is not None):
            label = row["label"] if i == 0 else None  # one legend entry per cell
            ax.plot(curve[0] / per_unit, curve[1], color=color, ls=LINES[k % len(LINES)], lw=1, label=label)
            drawn += 1
    if drawn:
        ax.set_xlabel(f"training {unit} (validation excluded)")
        ax.set_ylabel(f"best validation {grid.metric} so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title(f"{Path(where.data_path).name}: best validation {grid.metric} against training time")
        for fmt in ("png", "svg"):
            with cli.atomic_write(where.out / f"curves.{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=130)
    plt.close(fig)


def main() -> None:
    args, shared = p.parse_known_args()
    grid = read_grid(args, shared)
    where = open_out(args)
    todo = plan_runs(grid, where)
    skipped = len(grid.cells) * grid.repeats - len(todo)
    if args.report_only and not skipped:
        cli.fail(f"{where.out} holds no finished run of this grid: nothing to report")
    data = where.data
    cli.console.print(
        f"frontier {where.out}: {len(grid.cells)} cells x {grid.repeats} seeds on {where.data_path} "
        f"({data.n_users:,} users, {data.n_items:,} items, {data.n_events:,} events); "
        + (
            f"{skipped} finished runs, reporting them"
            if args.report_only
            else f"skipped {skipped} finished runs, {len(todo)} to run"
        ),
        highlight=False,
        soft_wrap=True,
    )
    if not args.report_only:
        run_all(grid, where, todo)

    rows = collect(grid, where)
    compare_with_baselines(grid, rows)
    mark_pareto(rows, grid.metric)
    baseline_names = {r["baseline"] for r in rows}
    write_tables(grid, where, rows)
    print_table(grid, where.out, rows, baseline_names)
    done = [r for r in rows if r["status"] == "ok"]
    if done:
        write_plots(grid, where, done, baseline_names)
    write_curves(grid, where, rows)
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    elsewhere = [r["name"] for r in rows if r["status"] == "elsewhere"]
    if elsewhere:  # two lanes on one grid: the other one finishes these; not a failure
        cli.console.print(
            f"{len(elsewhere)} of {len(rows)} cells are being trained by another frontier.py on this --out: "
            f"{', '.join(elsewhere)}",
            highlight=False,
            soft_wrap=True,
        )
    unfinished = [r["name"] for r in rows if r["status"] == "unfinished"]
    if unfinished:
        cli.console.print(
            f"{len(unfinished)} of {len(rows)} cells have runs not trained yet: {', '.join(unfinished)}",
            highlight=False,
            soft_wrap=True,
        )
    if len(failed) == len(rows):
        cli.console.print(
            f"every cell failed; see {where.out}/cells/*/seed*/stderr.log", highlight=False, soft_wrap=True
        )
        raise SystemExit(1)
    if failed:
        cli.console.print(
            f"{len(failed)} of {len(rows)} cells failed (a rerun retries them): {', '.join(failed)}",
            highlight=False,
            soft_wrap=True,
        )
    cli.print_path(where.out)


STYLE = {
    "last": ("s", "black"),
    "sliding": ("o", "tab:blue"),
    "mixed": ("^", "tab:green"),
    "random": ("D", "tab:orange"),
    "session": ("v", "tab:purple"),
}
assert set(STYLE) == set(REGIMES), "every regime needs a marker and color in the plots"


LINES = ("-", "--", "-.", ":")  # cells of one regime (one color) apart in curves.png

COST_AXES = (
    ("train_seconds", "training time (s, validation excluded)"),
    ("tokens", "tokens processed (non-padding inputs)"),
)


def draw(done: list[dict[str, Any]], metrics: list[str], baselines: list[dict[str, Any]], title: str) -> Any:
    """One panel per (metric, cost) over the finished cells `done`: a marker per cell (error bars =
    sample std over seeds), its label, the Pareto frontier (steps: the best metric reachable at each
    cost) and a reference line per baseline."""
    fig, axs = plt.subplots(len(metrics), 2, figsize=(12, 3.8 * len(metrics)), squeeze=False, constrained_layout=True)
    for i, m in enumerate(metrics):
        for j, (cost, xlabel) in enumerate(COST_AXES):
            ax = axs[i][j]
            draw_panel(ax, done, m, cost, baselines)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"test {m}")
            ax.grid(alpha=0.3)
    axs[0][0].legend(handles=legend_handles(done, axs[0][0]), fontsize=8, loc="best")
    fig.suptitle(title)
    return fig


def draw_panel(ax: Any, done: list[dict[str, Any]], m: str, cost: str, baselines: list[dict[str, Any]]) -> None:
    """One panel: metric `m` against `cost` for every cell, with the frontier and the baselines."""
    x = np.array([r["mean"][cost] for r in done])
    y = np.array([r["mean"][m] for r in done])
    xerr = np.nan_to_num([r["sd"][cost] for r in done]) if cost == "train_seconds" else None
    yerr = np.nan_to_num([r["sd"][m] for r in done])
    draw_cells(ax, done, x, y, xerr, yerr)
    draw_frontier(ax, x, y)
    for b in baselines:
        draw_baseline(ax, b["name"], b["mean"][m])
    format_cost_axis(ax, x, cost)


def draw_cells(
    ax: Any, done: list[dict[str, Any]], x: np.ndarray, y: np.ndarray, xerr: np.ndarray | None, yerr: np.ndarray
) -> None:
    """A marker per cell in its regime's style (error bars = sample std over seeds), and its label."""
    for regime, (marker, color) in STYLE.items():
        k = np.array([r["regime"] == regime for r in done])
        if k.any():
            ax.errorbar(
                x[k],
                y[k],
                yerr=yerr[k],
                xerr=None if xerr is None else xerr[k],
                fmt=marker,
                color=color,
                ms=6,
                capsize=2,
                lw=1,
                zorder=3,
            )
    for r, xi, yi in zip(done, x, y):  # the costliest point's label goes left, inside the panel
        right = xi == x.max() and len(x) > 1
        ax.annotate(
            r["label"],
            (xi, yi),
            textcoords="offset points",
            xytext=(-5 if right else 5, 4),
            ha="right" if right else "left",
            fontsize=8,
        )


def legend_handles(done: list[dict[str, Any]], ax: Any) -> list[Any]:
    """The legend's entries: each regime drawn, as its marker alone (an error bar's legend entry
    crosses the marker with its bars, so a square reads as a circle), then the frontier line."""
    regimes = [r for r in STYLE if any(row["regime"] == r for row in done)]
    markers = [Line2D([], [], marker=STYLE[r][0], color=STYLE[r][1], ls="none", ms=6, label=r) for r in regimes]
    return markers + [h for h in ax.get_lines() if h.get_label() == "Pareto frontier"]


def draw_frontier(ax: Any, x: np.ndarray, y: np.ndarray) -> None:
    """The Pareto frontier as steps: the best metric reachable at each cost."""
    front = pareto_mask(x, y)
    order = np.argsort(x[front])
    ax.plot(
        x[front][order],
        y[front][order],
        drawstyle="steps-post",
        ls="--",
        color="tab:red",
        lw=1,
        label="Pareto frontier",
        zorder=2,
    )


def draw_baseline(ax: Any, name: str, value: float) -> None:
    """A baseline's metric as a gray horizontal line, named at the panel's right edge."""
    ax.axhline(value, color="gray", ls=":", lw=1, zorder=1)
    ax.annotate(
        f"{name} (baseline)",
        (0.99, value),
        xycoords=("axes fraction", "data"),
        textcoords="offset points",
        xytext=(0, -3),
        ha="right",
        va="top",
        fontsize=7,
        color="gray",
    )


def format_cost_axis(ax: Any, x: np.ndarray, cost: str) -> None:
    """The cost axis: log scale when the costs `x` span decades, tokens in engineering notation,
    and room at both ends for the labels."""
    if x.min() > 0 and x.max() / x.min() > 10:  # costs spanning decades: log axis, ticks at 1-2-5
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(EngFormatter(sep="") if cost == "tokens" else FuncFormatter(lambda v, _: f"{v:g}"))
    ax.margins(x=0.12, y=0.15)


if __name__ == "__main__":
    cli.stage_main(main)
