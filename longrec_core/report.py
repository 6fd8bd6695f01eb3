"""What finished runs show, as numbers, tables and plots: the one reporting module.

scripts/frontier.py reports a grid with it (means ± sample standard deviations over seeds, each
cell's gain and cost against its baseline, the Pareto frontier, frontier.json and .csv, a table on
stderr, and the frontier and curves plots), and scripts/report.py the tables of docs/RESULTS.md
(paired differences on the same test users, metrics averaged over seeds with bootstrap intervals,
validation curves against steps, tokens and training time). Every figure comes from the runs' own
files, read through their owners (longrec_core.rundir, longrec_core.griddir). No torch at import,
and matplotlib only when a plot is drawn.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from longrec_core import cli
from longrec_core.choices import REGIMES
from longrec_core.frontier import Cell, Grid, baseline_of
from longrec_core.griddir import GridDir
from longrec_core.rundir import RunDir, Summary


# ----------------------------------------------------------------------------- numbers
def finite(x: float | None) -> float | None:
    """NaN -> None, so the JSON stays valid."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def scrub(x: Any) -> Any:
    """NaN -> None, recursively, so the JSON stays valid."""
    if isinstance(x, dict):
        return {k: scrub(v) for k, v in x.items()}
    if isinstance(x, list):
        return [scrub(v) for v in x]
    return finite(x)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan  # NaN stays NaN


def si(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1); sd is NaN for fewer than 2 values, both for none."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def pm(mean: float, sd: float | None, fmt: str) -> str:
    """ "mean ± sd" in format `fmt`; the mean alone when there is no spread (one seed: NaN, or None
    as frontier.json writes it)."""
    return format(mean, fmt) + ("" if sd is None or math.isnan(sd) else f" ± {format(sd, fmt)}")


def pareto_mask(cost: Sequence[float] | np.ndarray, value: Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) bool: True where no other point has cost <= and value >= with one of them strict
    (minimize cost, maximize value). Equal points are all on the frontier; NaN points never are
    and never dominate. O(n^2): grids are small."""
    c = np.asarray(cost, dtype=np.float64)
    v = np.asarray(value, dtype=np.float64)
    if c.shape != v.shape or c.ndim != 1:
        raise ValueError(f"cost and value must be 1-d and of one length, got {c.shape} and {v.shape}")
    ok = np.isfinite(c) & np.isfinite(v)
    # dominated[i, j]: point j dominates point i
    dominated = (
        (c[None, :] <= c[:, None])
        & (v[None, :] >= v[:, None])
        & ((c[None, :] < c[:, None]) | (v[None, :] > v[:, None]))
        & ok[None, :]
    )
    return ok & ~dominated.any(axis=1)


# ----------------------------------------------------------------------------- paired, per user
@functools.cache  # one read per run: seed-averaged tables pair each run against several others
def ranks_of(run: RunDir) -> tuple[np.ndarray, np.ndarray] | None:
    """(users, ranks) of a run's test evaluation; None when it has none."""
    return run.read_ranks("test")


def paired(a: RunDir, b: RunDir, metric: str) -> dict[str, Any] | None:
    """a vs b on their common test users: diff of means, 95% CI, sign-flip p (None: one lacks ranks)."""
    from longrec_core.metrics import paired_comparison  # here: it loads torch

    ra, rb = ranks_of(a), ranks_of(b)
    if ra is None or rb is None:
        return None
    _common, ia, ib = np.intersect1d(ra[0], rb[0], assume_unique=True, return_indices=True)
    return paired_comparison(ra[1][ia], rb[1][ib], metric, n_boot=2000, seed=0)


def fmt_diff(r: dict[str, Any] | None) -> str:
    """A `paired` result as "diff (relative) [CI] p=..."."""
    if r is None:
        return "—"
    rel = f" ({r['diff'] / r['mean_b']:+.1%})" if r["mean_b"] else ""
    return f"{r['diff']:+.4f}{rel} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] p={r['p_value']:.2g}"


def seed_mean_per_user(runs: list[RunDir], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(users, per-user metric averaged over the runs' seeds) on the users every run ranked."""
    from longrec_core.metrics import per_user  # here: it loads torch

    per_run = [got for got in map(ranks_of, runs) if got is not None]  # evaluated runs: every one
    users = per_run[0][0]
    for u, _ in per_run[1:]:
        users = np.intersect1d(users, u, assume_unique=True)
    values = [per_user(r[np.searchsorted(u, users)], metric) for u, r in per_run]
    return users, np.mean(values, axis=0)


def mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval over users."""
    rng = np.random.default_rng(seed)
    boot = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(values.mean()), float(lo), float(hi)


def with_ci(stat: tuple[float, float, float]) -> str:
    """A mean_ci result as "mean [low, high]"."""
    return f"{stat[0]:.4f} [{stat[1]:.4f}, {stat[2]:.4f}]"


def seed_paired_delta(runs: list[RunDir], base: list[RunDir], metric: str) -> tuple[float, float, float, float]:
    """(mean difference, 95% CI low, high, the base's mean) of the per-user metric averaged over
    seeds, `runs` minus `base`, on the users both ranked."""
    ua, va = seed_mean_per_user(runs, metric)
    ub, vb = seed_mean_per_user(base, metric)
    common = np.intersect1d(ua, ub, assume_unique=True)
    b = vb[np.searchsorted(ub, common)]
    m, lo, hi = mean_ci(va[np.searchsorted(ua, common)] - b)
    return m, lo, hi, float(b.mean())


# ----------------------------------------------------------------------------- validation curves
def time_unit(max_seconds: float) -> tuple[float, str]:
    """(seconds per unit, unit name) to draw times up to `max_seconds` in: seconds below 2 minutes,
    minutes below 2 hours, else hours, so a plot's axis reads 0-90, not 0.0-1.5."""
    if not max_seconds < 120:  # NaN too: hours never hide anything
        return (60.0, "minutes") if max_seconds < 7200 else (3600.0, "hours")
    return 1.0, "seconds"


def validation_curve(run: RunDir, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(cumulative training seconds, best validation `metric` so far) after each epoch of a run,
    finished or not, from its log.jsonl; None when it has no validated epoch yet.

    Each epoch counts once (`RunDir.read_log`): an epoch's record holds its training seconds so far,
    so a partial record and the record of the same epoch resumed and finished are not added up."""
    points, seconds = [], 0.0
    for rec in run.read_log():
        seconds += rec.get("train_seconds", 0.0)
        if isinstance(rec.get("valid"), dict) and metric in rec["valid"]:
            points.append((seconds, rec["valid"][metric]))
    if not points:
        return None
    at, values = np.array(points).T
    return at, np.maximum.accumulate(values)


def epoch_points(run: RunDir) -> list[tuple[int, int, float]]:
    """(optimizer steps, tokens, validation NDCG@10) after each epoch of a run, from its log.jsonl."""
    log = run.read_log()
    if not log:
        return []
    batch_size = run.config()["batch_size"]
    steps = tokens = 0
    out = []
    for r in log:
        steps += -(-r["examples"] // batch_size)
        tokens += r["tokens"]
        out.append((steps, tokens, r["valid"].get("NDCG@10", float("nan"))))
    return out


def best_within(points: list[tuple[int, int, float]], axis: int, limit: float) -> str:
    """Best validation NDCG@10 among the epochs that ended within `limit` steps (axis 0) or tokens (1)."""
    vals = [p[2] for p in points if p[axis] <= limit]
    return f"{max(vals):.4f}" if vals else "—"


def time_to(run: RunDir, level: float | None) -> float | None:
    """Training seconds (validation excluded) until validation NDCG@10 first reached `level`
    (None: the best epoch), from log.jsonl; None if it never did."""
    log = run.read_log()
    best = max(r["valid"]["NDCG@10"] for r in log)
    seconds = 0.0
    for r in log:
        seconds += r["train_seconds"]
        if r["valid"]["NDCG@10"] >= (best if level is None else level):
            return seconds
    return None


def summary_of(run: RunDir) -> Summary:
    """A run's summary; an empty one when it has none (its figures then raise KeyError)."""
    return run.summary() or Summary({})


def mean_train_seconds(runs: list[RunDir]) -> float:
    """Mean training seconds to early stopping over the runs' seeds."""
    return float(np.mean([summary_of(r)["train_seconds"] for r in runs]))


def tokens_to_best(run: RunDir) -> int:
    """Training tokens (targets) processed up to and including the best validation epoch."""
    best = summary_of(run)["best_epoch"]
    return sum(r["tokens"] for r in run.read_log() if r["epoch"] <= best)


def cpu_hours(grid: GridDir) -> float:
    """One-thread hours the grid's runs spent training and validating so far (from log.jsonl)."""
    logs = [run.read_log() for run in grid.logged_runs()]
    return sum(r["train_seconds"] + r["eval_seconds"] for log in logs for r in log) / 3600


# ----------------------------------------------------------------------------- a grid's cells
def seed_outcomes(grid: Grid, out: GridDir, cell: Cell) -> list[dict[str, Any]]:
    """Each seed of a cell from its files: costs and metrics when it finished, "elsewhere" while
    another frontier.py on the same grid trains it, its error when it failed, else "unfinished"
    (not run yet: a grid that is still training, seen with --report-only)."""
    runs = []
    for seed in range(grid.repeats):
        d = out.seed(cell.name, seed)
        m = d.run.metric_values()
        if m is not None:
            s = summary_of(d.run)
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
        elif d.claim_holder() not in (None, os.getpid()):
            runs.append({"seed": seed, "status": "elsewhere", "error": "another frontier.py is training it"})
        else:
            rec = d.read_record() or {}
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


def collect(grid: Grid, out: GridDir) -> list[dict[str, Any]]:
    """One row per cell: means over its seeds (± sample std), as long as every seed finished."""
    rows: list[dict[str, Any]] = []
    varying = {k for k, v in grid.axes.items() if len(v) > 1}  # axes that plot labels must name
    for cell in grid.cells:
        runs = seed_outcomes(grid, out, cell)
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


# ----------------------------------------------------------------------------- a grid's tables
def write_tables(grid: Grid, out: GridDir, data_path: str, rows: list[dict[str, Any]]) -> None:
    """frontier.json (everything) and frontier.csv (one flat line per cell)."""
    metrics = grid.metrics
    report = {
        "data": data_path,
        "out": str(out.path),
        "metric": grid.metric,
        "metrics": metrics,
        "repeats": grid.repeats,
        "spread": "sample standard deviation over seeds (ddof=1); null with one seed",
        "grid": grid.axes,
        "flags": grid.shared,
        "cells": scrub(rows),
    }
    out.path.mkdir(parents=True, exist_ok=True)
    with cli.atomic_write(out.frontier_json) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    columns = ["name", "regime", "window", "stride", "max_history", "targets", "item_emb", "status", "seeds_ok"]
    columns += [c for m in metrics for c in (m, f"{m}_sd")]
    columns += ["train_seconds", "train_seconds_sd", "tokens", "epochs", "peak_memory_bytes", "baseline"]
    columns += [f"gain_{m}" for m in metrics] + ["time_x", "tokens_x", "pareto_train_seconds", "pareto_tokens", "error"]
    with cli.atomic_write(out.frontier_csv) as tmp, open(tmp, "w", newline="") as f:
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


def row_pm(row: dict[str, Any], key: str, fmt: str) -> str:
    """mean ± sample std of a finished row, else '-'."""
    return pm(row["mean"][key], row["sd"][key], fmt) if row["status"] == "ok" else "-"


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
    for col in ["cell", "seeds", *metrics, "train s", "tokens", "peak MiB", f"Δ {metric}", "time ×", "tokens ×"]:
        table.add_column(col, justify="left" if col == "cell" else "right", no_wrap=True)
    table.add_column("frontier", justify="right", no_wrap=True)
    for r in rows:
        front = ", ".join(k for k, c in (("time", "pareto_train_seconds"), ("tokens", "pareto_tokens")) if r[c])
        table.add_row(
            r["name"] + (" (baseline)" if r["name"] in baseline_names else ""),
            f"{r['seeds_ok']}/{repeats}" + ("" if r["status"] == "ok" else f" {r['status']}"),
            *[row_pm(r, m, ".4f") for m in metrics],
            row_pm(r, "train_seconds", ".1f"),
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
            line = f"{r['name']}: {gains} at {r['time_x']:.2f}× time, {r['tokens_x']:.2f}× tokens vs. {r['baseline']}"
        elif r["status"] != "ok":
            line = f"{r['name']}: {r['status']}: {r['error']}"
        else:
            continue
        cli.console.print(line, highlight=False, markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------- plots
STYLE = {  # regime -> (marker, color)
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


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files only (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, out: GridDir, name: str) -> None:
    """A grid's plot as png and svg, each written atomically."""
    for fmt in ("png", "svg"):
        with cli.atomic_write(out.plot(name, fmt)) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130)


def write_plots(grid: Grid, out: GridDir, data_name: str, done: list[dict[str, Any]], baseline_names: set[str]) -> None:
    """frontier.png and .svg over the finished cells."""
    title = f"{data_name}: test metrics vs. training cost, {len(done)} cells" + (
        f", mean ± sample std over {grid.repeats} seeds" if grid.repeats > 1 else ""
    )
    fig = draw(done, grid.metrics, [r for r in done if r["name"] in baseline_names], title)
    save_plot(fig, out, "frontier")
    pyplot().close(fig)


def write_curves(grid: Grid, out: GridDir, data_name: str, rows: list[dict[str, Any]]) -> None:
    """curves.png and .svg: the best validation metric so far against training time (in seconds,
    minutes or hours, by the longest run), a line per seed of every cell (finished or still
    training), to pick the regime for a given budget."""
    curves = {
        row["name"]: [validation_curve(out.run(row["name"], seed), grid.metric) for seed in range(grid.repeats)]
        for row in rows
    }
    longest = max((c[0][-1] for cs in curves.values() for c in cs if c is not None), default=0.0)
    per_unit, unit = time_unit(longest)
    plt = pyplot()
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
        ax.set_title(f"{data_name}: best validation {grid.metric} against training time")
        save_plot(fig, out, "curves")
    plt.close(fig)


def draw(done: list[dict[str, Any]], metrics: list[str], baselines: list[dict[str, Any]], title: str) -> Any:
    """One panel per (metric, cost) over the finished cells `done`: a marker per cell (error bars =
    sample std over seeds), its label, the Pareto frontier (steps: the best metric reachable at each
    cost) and a reference line per baseline."""
    fig, axs = pyplot().subplots(
        len(metrics), 2, figsize=(12, 3.8 * len(metrics)), squeeze=False, constrained_layout=True
    )
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
    from matplotlib.lines import Line2D

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
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

    if x.min() > 0 and x.max() / x.min() > 10:  # costs spanning decades: log axis, ticks at 1-2-5
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(EngFormatter(sep="") if cost == "tokens" else FuncFormatter(lambda v, _: f"{v:g}"))
    ax.margins(x=0.12, y=0.15)


def plot_epoch_points(runs: dict[str, list[tuple[int, int, float]]], title: str, path: Path) -> None:
    """Validation NDCG@10 per epoch against optimizer steps and against training tokens (`epoch_points`),
    a line per run, to `path` (PNG)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, pts in runs.items():
        for ax, axis in zip(axes, (0, 1)):
            ax.plot([p[axis] for p in pts], [p[2] for p in pts], marker="o", ms=3, label=name)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("training tokens")
    for ax in axes:
        ax.set_ylabel("validation NDCG@10")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- tables inside a document
MARKED = re.compile(r"^<!-- report: (?P<key>[\w-]+) -->\n(?P<body>.*?)^<!-- /report -->$", re.S | re.M)


class MissingRuns(Exception):
    """A table cannot be made: a run it shows is not in the results dir."""


def rewrite_marked(text: str, tables: dict[str, Callable[[], list[str]]], log: Callable[[str], None]) -> str:
    """`text` with each block between `<!-- report: KEY -->` and `<!-- /report -->` replaced by the
    lines `tables[KEY]()` makes; a block whose table raises MissingRuns keeps its text, and `log`
    says which and why. KeyError (before anything is made) when the text marks a key `tables` lacks."""
    unknown = sorted({m["key"] for m in MARKED.finditer(text)} - set(tables))
    if unknown:
        raise KeyError(", ".join(unknown))

    def table(m: re.Match[str]) -> str:
        try:
            body = "".join(line + "\n" for line in tables[m["key"]]())
        except MissingRuns as e:
            log(f"{m['key']}: kept as it was ({e})")
            return m[0]
        log(f"{m['key']}: made from the runs")
        return f"<!-- report: {m['key']} -->\n{body}<!-- /report -->"

    return MARKED.sub(table, text)
