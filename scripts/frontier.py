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

Each seed k = 0..R-1 of a cell runs `train.py --seed k ... --out RUN`, then `eval.py --run RUN
--split test`, as subprocesses of this Python, in the cell's seed dir under OUT (its layout:
longrec_core/griddir.py), which also keeps their stderr and the run's record. A run is finished when
its test metrics are written; a run that was stopped (Ctrl-C, a killed
job) continues from its checkpoint (train.py --resume) when frontier.py is run again. Ctrl-C or
SIGTERM stops the running train.py as it stops train.py alone (a checkpoint after the current step)
and starts no further run. Two or more
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
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from longrec_core import cli, report, startup
from longrec_core.choices import ITEM_EMBS, REGIMES, TARGETS
from longrec_core.datadir import DataDir, load_data_dir
from longrec_core.frontier import (
    DEFAULTS,
    Cell,
    Grid,
    failure_line,
    load_grid,
    make_cells,
    metric_name,
    parse_axis,
    trains_the_same,
)
from longrec_core.griddir import GridDir, SeedDir
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


@dataclass
class Where:
    """Where the grid reads and writes."""

    data: DataDir
    data_path: str  # absolute
    out: GridDir


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
    out = GridDir(Path(args.out) if args.out else Path("runs") / f"frontier-{Path(data_path).name}")
    if out.is_other_dir():
        cli.fail(f"{out.path} is not empty and is not a frontier dir; pass another --out")
    return Where(data, data_path, out)


def train_args(where: Where, grid: Grid, cell: Cell, seed: int) -> list[str]:
    """train.py's flags for one run except --out (recorded, so a rerun can tell what trained it)."""
    return ["--data", where.data_path, "--seed", str(seed), *cell.train_args(), *grid.shared]


def plan_runs(grid: Grid, where: Where) -> list[tuple[Cell, int]]:
    """The runs to do: every (cell, seed) without test metrics, seed-major (every cell's seed 0
    first), so a grid stopped part-way has one comparable seed of each cell. Finished runs are
    skipped; one trained with other flags is refused, since it would silently mix two experiments
    (settings that change only speed, such as --threads, may differ: SPEED_ONLY_SETTINGS)."""
    todo: list[tuple[Cell, int]] = []
    for seed in range(grid.repeats):
        for cell in grid.cells:
            d = where.out.seed(cell.name, seed)
            if d.run.metric_values() is None:
                todo.append((cell, seed))
                continue
            then = d.recorded_args()
            if then is not None and not trains_the_same(then, train_args(where, grid, cell, seed)):
                cli.fail(
                    f"{d.path} was trained with other flags (then: {shlex.join(then)}); "
                    f"pass another --out, or delete that cell to retrain it"
                )
    return todo


def stage(cmd: list[str], log: Any) -> int:
    """Run one stage with its stderr appended to `log` after a `$ command` line; its exit status.

    Ctrl-C or SIGTERM (a KeyboardInterrupt here, longrec_core.startup) stops the stage as it stops
    train.py run alone: the stage is sent `startup.STOP` (so a signal sent to frontier.py alone
    reaches it, and one its process group had as well does not count twice) and waited for, so
    train.py checkpoints after its current step before frontier.py ends; a second interrupt kills
    the stage at once."""
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            try:
                proc.send_signal(startup.STOP)
                proc.wait()
            except KeyboardInterrupt:
                proc.kill()
            raise


def run_one(d: SeedDir, cell: Cell, seed: int, targs: list[str], shared: list[str]) -> tuple[dict[str, Any], int]:
    """Train (or resume) and evaluate one claimed run in seed dir `d`: its cell.json record and the
    exit status of its last stage.

    A run whose training finished with these flags only needs its evaluation; one that was stopped
    (Ctrl-C, a killed lane) continues from its checkpoint; any other leftover (a failed attempt)
    starts over: train.py wants an empty dir."""
    run = d.run
    then = d.recorded_args()
    same = trains_the_same(then, targs)
    trained = same and run.finished() is not None  # anything else is resumed or redone
    resumable = same and not trained and run.has_checkpoint()
    if not trained and not resumable and run.path.exists():
        shutil.rmtree(run.path)
    record: dict[str, Any] = {"cell": cell.name, "seed": seed, "status": "running", "train_args": targs}
    d.write_record(record)
    t0 = time.perf_counter()
    with open(d.stderr_log, "a") as log:
        rc, failed_stage = 0, None
        if not trained:
            how = ["--resume", str(run.path), *shared] if resumable else [*targs, "--out", str(run.path)]
            rc = stage([sys.executable, str(TRAIN), *how], log)
            failed_stage = "train" if rc else None
        if rc == 0:
            rc = stage([sys.executable, str(EVAL), "--run", str(run.path), "--split", "test"], log)
            failed_stage = "eval" if rc else None
    record["wall_seconds"] = time.perf_counter() - t0
    if rc == 0:
        record["status"] = "ok"
    else:
        why = failure_line(d.stderr_log.read_text(errors="replace")) or (
            f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        )
        record.update(status="failed", stage=failed_stage, error=f"{failed_stage}: {why}")
    d.write_record(record)
    d.release()
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


def run_line(record: dict[str, Any], d: SeedDir, metric: str) -> str:
    """What one run gave: its headline metric and training cost, or why it failed."""
    if record["status"] == "ok":
        s = report.summary_of(d.run)
        m = d.run.metric_values() or {}
        return (
            f"{metric} {m.get(metric, math.nan):.4f}, {s.get('train_seconds', math.nan):.1f} s training, "
            f"{report.si(s.get('tokens', 0))} tokens"
        )
    return f"FAILED ({record['error']}; log: {d.stderr_log})"


def run_all(grid: Grid, where: Where, todo: list[tuple[Cell, int]]) -> None:
    """Run the planned runs one after another, each claimed first so that another frontier.py on the
    same --out never runs it too; a line per run on stderr."""
    t_start = time.perf_counter()
    with cli.progress(eta=True) as progress:
        bar = progress.add_task("runs", total=len(todo))
        for i, (cell, seed) in enumerate(todo, 1):
            progress.update(bar, description=f"run {i}/{len(todo)}: {cell.name} seed{seed}")
            d = where.out.seed(cell.name, seed)
            d.path.mkdir(parents=True, exist_ok=True)
            held = not d.claim()
            done = not held and d.run.metric_values() is not None  # another lane finished it after the plan
            if done:
                d.release()
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


def write_report(grid: Grid, where: Where) -> list[dict[str, Any]]:
    """Every cell's row from its runs' files: frontier.json and .csv, the table on stderr, and the
    frontier and curves plots (longrec_core.report)."""
    rows = report.collect(grid, where.out)
    report.compare_with_baselines(grid, rows)
    report.mark_pareto(rows, grid.metric)
    baseline_names = {r["baseline"] for r in rows}
    report.write_tables(grid, where.out, where.data_path, rows)
    report.print_table(grid, where.out.path, rows, baseline_names)
    data_name = Path(where.data_path).name
    done = [r for r in rows if r["status"] == "ok"]
    if done:
        report.write_plots(grid, where.out, data_name, done, baseline_names)
    report.write_curves(grid, where.out, data_name, rows)
    return rows


def say(msg: str) -> None:
    cli.console.print(msg, highlight=False, soft_wrap=True)


def print_outcome(where: Where, rows: list[dict[str, Any]]) -> None:
    """What is not finished, and why: cells another lane trains, cells not run yet and failed ones;
    exit 1 when every cell failed."""
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    elsewhere = [r["name"] for r in rows if r["status"] == "elsewhere"]
    if elsewhere:  # two lanes on one grid: the other one finishes these; not a failure
        say(
            f"{len(elsewhere)} of {len(rows)} cells are being trained by another frontier.py on this --out: "
            f"{', '.join(elsewhere)}"
        )
    unfinished = [r["name"] for r in rows if r["status"] == "unfinished"]
    if unfinished:
        say(f"{len(unfinished)} of {len(rows)} cells have runs not trained yet: {', '.join(unfinished)}")
    if len(failed) == len(rows):
        say(f"every cell failed; see {where.out.stderr_logs()}")
        raise SystemExit(1)
    if failed:
        say(f"{len(failed)} of {len(rows)} cells failed (a rerun retries them): {', '.join(failed)}")


def main() -> None:
    args, shared = p.parse_known_args()
    grid = read_grid(args, shared)
    where = open_out(args)
    todo = plan_runs(grid, where)
    skipped = len(grid.cells) * grid.repeats - len(todo)
    if args.report_only and not skipped:
        cli.fail(f"{where.out.path} holds no finished run of this grid: nothing to report")
    data = where.data
    say(
        f"frontier {where.out.path}: {len(grid.cells)} cells x {grid.repeats} seeds on {where.data_path} "
        f"({data.n_users:,} users, {data.n_items:,} items, {data.n_events:,} events); "
        + (
            f"{skipped} finished runs, reporting them"
            if args.report_only
            else f"skipped {skipped} finished runs, {len(todo)} to run"
        )
    )
    if not args.report_only:
        run_all(grid, where, todo)
    print_outcome(where, write_report(grid, where))
    cli.print_path(where.out.path)


if __name__ == "__main__":
    cli.stage_main(main)
