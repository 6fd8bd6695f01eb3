"""The tables of docs/RESULTS.md, computed from the finished runs of docs/results.sh.

    python scripts/report.py runs/results docs/results > runs/results/tables.md   # + curve plots
    bash docs/results.sh report                                                    # the same

Every number comes from the runs' own files: each grid's frontier.json (means and sample standard
deviations over seeds, costs), each run's test metrics (with their bootstrap CI), its per-user
test ranks (for paired comparisons: the same users ranked by two models, the difference's 95%
bootstrap CI and sign-flip p), its summary (time, tokens, memory) and its epoch log. Missing runs
are reported as missing, never filled in. The numbers and plots: longrec_core/report.py; where the
files are: longrec_core/griddir.py and longrec_core/rundir.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from longrec_core import cli
from longrec_core.griddir import GridDir
from longrec_core.report import (
    MissingRuns,
    best_within,
    cpu_hours,
    epoch_points,
    fmt_diff,
    mean_ci,
    mean_train_seconds,
    paired,
    plot_epoch_points,
    pm,
    rewrite_marked,
    seed_mean_per_user,
    seed_paired_delta,
    summary_of,
    time_to,
    tokens_to_best,
    with_ci,
)
from longrec_core.rundir import RunDir, Summary

METRICS = ("NDCG@10", "HR@10", "MRR")
PUBLISHED = {"NDCG@10": 0.1821, "HR@10": 0.3152}  # SASRec+ on ml-1m (Klenitskiy & Vasilev, RecSys 2023)
PAPER_CLAIM = {"MRR": 0.0604, "HR@10": 0.0634}  # sliding vs last on Retailrocket, at about 4x the training time


def test_metrics(run: RunDir) -> dict[str, Any]:
    """A run's test metrics JSON; {} when it has none."""
    return run.read_metrics("test") or {}


def minutes(xs: list[float | None]) -> str:
    """Mean over seeds in minutes, or how many seeds never got there."""
    got = [x for x in xs if x is not None]
    if len(got) < len(xs):
        return f"{len(xs) - len(got)} of {len(xs)} never"
    return f"{np.mean(got) / 60:.1f}"


def paired_delta(runs: list[RunDir], base: list[RunDir], metric: str) -> str:
    """`runs` against `base`: "diff (relative) [95% CI]" of the per-user metric averaged over each
    side's seeds, on the users both ranked."""
    m, lo, hi, ref = seed_paired_delta(runs, base, metric)
    return f"{m:+.4f} ({m / ref:+.1%}) [{lo:+.4f}, {hi:+.4f}]"


# ----------------------------------------------------------------------------- budget-limited grids
def grid_table(root: Path, name: str, title: str) -> list[str]:
    """A grid's frontier.json: each cell's mean ± sd over seeds, and seed 0 paired against `last`'s."""
    grid = GridDir(root / name)
    fr = grid.read_frontier()
    if fr is None:
        return [f"### {title}", "", f"(not finished: {grid.frontier_json} is missing)", ""]
    cells = fr["cells"]
    base = next((c for c in cells if c["regime"] == "last"), None)
    lines = [
        f"### {title}",
        "",
        f"`{grid.path}`: {fr['repeats']} seed(s) per cell; mean ± sample sd over seeds; paired difference = "
        "seed 0 of the cell vs seed 0 of `last` on the same test users (95% bootstrap CI, sign-flip p).",
        "",
        "| cell | seeds | NDCG@10 | HR@10 | MRR | train s | tokens (M) | epochs | ΔNDCG@10 vs last (seed 0) | "
        "ΔMRR % | ΔHR@10 % | tokens × |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if c["status"] != "ok":
            lines.append(f"| {c['name']} | {c['seeds_ok']} | {c['status']}: {c.get('error') or ''} |" + " |" * 9)
            continue
        against = base is not None and c is not base
        d = paired(grid.run(c["name"]), grid.run(base["name"]), "NDCG@10") if against else None
        rel = {
            k: f"{c['mean'][k] / base['mean'][k] - 1:+.1%}" if against and base["mean"].get(k) else "—"
            for k in ("MRR", "HR@10")
        }
        tok_x = f"{c['mean']['tokens'] / base['mean']['tokens']:.2f}×" if against else "—"
        lines.append(
            f"| {c['name']} | {c['seeds_ok']} | {cell_pm(c, 'NDCG@10')} | {cell_pm(c, 'HR@10')} | "
            f"{cell_pm(c, 'MRR')} | "
            f"{c['mean']['train_seconds']:.0f} | {c['mean']['tokens'] / 1e6:.1f} | {cell_pm(c, 'epochs', '.1f')} | "
            f"{fmt_diff(d)} | {rel['MRR']} | {rel['HR@10']} | {tok_x} |"
        )
    return lines + [""]


def cell_pm(cell: dict[str, Any], key: str, spec: str = ".4f") -> str:
    """A frontier.json cell's mean ± sd of `key`."""
    m = cell["mean"].get(key)
    return "—" if m is None else pm(m, cell["sd"].get(key), spec)


def curves_table(root: Path, name: str, plot_dir: Path | None) -> list[str]:
    """Validation NDCG@10 against optimizer steps and tokens: comparisons that do not depend on
    how busy the machine was (the time budget does), for seed 0 of every cell."""
    grid = GridDir(root / name)
    fr = grid.read_frontier()
    if fr is None:
        return []
    runs = {c["name"]: epoch_points(grid.run(c["name"])) for c in fr["cells"]}
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        return []
    most_steps = min(v[-1][0] for v in runs.values())
    most_tokens = min(v[-1][1] for v in runs.values())
    step_marks = [int(most_steps * f) for f in (0.25, 0.5, 1.0)]
    token_marks = [int(most_tokens * f) for f in (0.5, 1.0)]
    lines = [
        "Best validation NDCG@10 by optimizer steps and by training tokens (seed 0; load-independent):",
        "",
        "| cell | "
        + " | ".join(f"≤ {m:,} steps" for m in step_marks)
        + " | "
        + " | ".join(f"≤ {m / 1e6:.1f}M tokens" for m in token_marks)
        + " | steps run | tokens run |",
        "|---|" + "---|" * (len(step_marks) + len(token_marks) + 2),
    ]
    for cell, pts in runs.items():
        lines.append(
            f"| {cell} | "
            + " | ".join(best_within(pts, 0, m) for m in step_marks)
            + " | "
            + " | ".join(best_within(pts, 1, m) for m in token_marks)
            + f" | {pts[-1][0]:,} | {pts[-1][1] / 1e6:.1f}M |"
        )
    if plot_dir is not None:
        title = f"{name}: validation NDCG@10 per epoch (seed 0)"
        plot_epoch_points(runs, title, plot_dir / f"{name}-curves.png")
        lines += ["", f"![{name} learning curves](results/{name}-curves.png)"]
    return lines + [""]


# ----------------------------------------------------------------------------- single runs against a reference
def versus_table(
    root: Path, ref: tuple[str, str], rows: list[tuple[str, str, str]], title: str, extra: str = "memory"
) -> list[str]:
    """Single-seed runs against a reference run: metrics, paired ΔNDCG@10, cost."""
    ref_run = GridDir(root / ref[0]).run(ref[1])
    lines = [
        f"### {title}",
        "",
        f"Reference: `{ref_run.path}`.",
        "",
        "| run | NDCG@10 | HR@10 | MRR | ΔNDCG@10 vs reference | ΔMRR vs reference | train s | tokens/s | "
        + ("embedding + grad + AdamW MiB | collisions |" if extra == "kshift" else "peak RSS MiB |"),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if extra == "kshift" else ""),
    ]
    for label, folder, cell in [("reference", *ref), *rows]:
        run = GridDir(root / folder).run(cell)
        m, s = test_metrics(run).get("metrics"), run.summary()
        if not m or not s:
            lines.append(f"| {label} | (missing: {run.path}) |" + " |" * (8 if extra == "kshift" else 7))
            continue
        d = None if label == "reference" else paired(run, ref_run, "NDCG@10")
        dm = None if label == "reference" else paired(run, ref_run, "MRR")
        cost = f"{s['train_seconds']:.0f} | {s['tokens_per_second']:,.0f}"
        tail = embedding_cells(run, s) if extra == "kshift" else f"{s['peak_memory_bytes'] / 2**20:,.0f} |"
        lines.append(
            f"| {label} | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} | {m['MRR']:.4f} | {fmt_diff(d)} | "
            f"{fmt_diff(dm)} | {cost} | {tail}"
        )
    return lines + [""]


def embedding_cells(run: RunDir, s: Summary) -> str:
    """The embedding's training memory in MiB (table, gradient, AdamW moments) and, for k-shift, the
    share of items whose whole row set another item shares."""
    mem = s["embedding_memory"]
    emb = f"{(mem['params_bytes'] + mem['grad_bytes'] + mem['adam_bytes']) / 2**20:.2f}"
    cfg = run.config().model or {}
    coll = "—"
    if cfg["item_emb"] == "kshift":
        from longrec_core.model import _kshift_rows_int32 as rows_of
        from longrec_core.model import kshift_collision_share, kshift_table_rows

        rows = rows_of(
            cfg["n_items"],
            cfg["kshift_k"],
            kshift_table_rows(cfg["n_items"], cfg["kshift_compression"]),
            cfg["kshift_seed"],
            cfg["kshift_scheme"],
        )
        coll = f"{kshift_collision_share(rows):.2%}"
    return f"{emb} | {coll} |"


EMB_VARIANTS = {  # results.sh's item-embedding runs: out-dir suffix (its first word is --item-emb) -> label
    "kshift-c4": "k-shift c4",
    "lowrank-c4": "low-rank c4 (r = 16)",
    "kshift-c16": "k-shift c16",
    "kshift-c16-weights": "k-shift c16, learned row weights",
    "kshift-c16-rowwise": "k-shift c16, row-wise optimizer for the table",
    "kshift-c32-head378-weights": "exact rows for the 378 most frequent items + k-shift c32 with row weights",
    "kshift-c32-head106-weights": "exact rows for the 106 most frequent items + k-shift c32 with row weights",
    "lowrank-c16": "low-rank c16 (r = 4)",
    "kshift-c64": "k-shift c64",
    "lowrank-c64": "low-rank c64 (r = 1)",
    "codes-m8": "codes (RecJPQ), m = 8 of 256 values",
    "codes-pq-m8": "codes by product quantisation (pq), m = 8 of 256 values",
    "codes-pq-m8-r2": "the same + 2 floats of each item's own (--code-residual 2)",
    "codes-pq-m8-r3": "pq codes + 3 floats of each item's own (--code-residual 3)",
    "codes-m32": "codes (RecJPQ), m = 32 of 256 values",
    "codes-m8-c128": "codes (RecJPQ), m = 8 of 128 values",
    "codes-m8-c64": "codes (RecJPQ), m = 8 of 64 values",
    "kshift-paper": "k-shift with P = 1.15 N rows (the paper code's setting)",
    "kshift-codes-c64": "k-shift, its 8 rows picked by codes of 64 values (8 x 64 rows)",
}


EMB_HEAD = (
    "| embedding | seeds | NDCG@10 [CI] | HR@10 | Δ NDCG@10 vs full [CI] | Δ HR@10 vs full [CI] | "
    "best epoch of each seed | train min (mean) | bytes per item to train | × full table |"
)


def embedding_table(root: Path, ref: tuple[str, str], rows: list[tuple[str, str, str]], title: str) -> list[str]:
    """Item embeddings trained to early stopping against the full table's runs of the same model,
    every finished seed of each: test metrics averaged over seeds, differences paired on the same
    test users (each side's per-user metric averaged over its seeds), epochs, time and the
    embedding's training memory per item (table, gradient, AdamW moments, k-shift row buffer)."""
    ref_grid = GridDir(root / ref[0])
    lines = [
        f"### {title}",
        "",
        f"Reference (full table): `{ref_grid.cell_dir(ref[1])}`, {len(ref_grid.evaluated_runs(ref[1]))} seed(s). "
        "Metrics are means over seeds; Δ: paired on the same test users, each side averaged over its seeds "
        "[95% bootstrap CI].",
        "",
        EMB_HEAD,
        "|---" * 10 + "|",
    ]
    return lines + embedding_rows(root, ref, rows, strict=False) + [""]


def embedding_rows(
    root: Path, ref: tuple[str, str], rows: list[tuple[str, str, str]], *, strict: bool, data: str = ""
) -> list[str]:
    """The rows of `embedding_table`, the full table first, each led by `data` as a column when given.
    A variant without a finished seed gets a "not finished" row, or raises MissingRuns if `strict`."""
    ref_runs = GridDir(root / ref[0]).evaluated_runs(ref[1])
    lead = f"| {data} " if data else ""
    if not ref_runs:
        if strict:
            raise MissingRuns(f"{root / ref[0]}: no evaluated run of {ref[1]}")
        return [f"{lead}| full table | 0 | (no evaluated run in {root / ref[0]}) |" + " |" * 7]
    lines = []
    for label, folder, cell in [("full table", *ref), *rows]:
        grid = GridDir(root / folder)
        runs = grid.evaluated_runs(cell)
        if not runs:
            if strict:
                raise MissingRuns(f"{grid.path}: no evaluated run of {cell}")
            if grid.cell_dir(cell).is_dir():  # started, no seed finished yet
                lines.append(f"{lead}| {label} | 0 | (not finished: {grid.cell_dir(cell)}) |" + " |" * 7)
            continue
        sums, first = [summary_of(r) for r in runs], runs == ref_runs
        mem, n_items = sums[0]["embedding_memory"], test_metrics(runs[0])["n_items"]
        deltas = ["—", "—"] if first else [paired_delta(runs, ref_runs, m) for m in ("NDCG@10", "HR@10")]
        lines.append(
            f"{lead}| {label} | {len(runs)} | {with_ci(mean_ci(seed_mean_per_user(runs, 'NDCG@10')[1]))} | "
            f"{seed_mean_per_user(runs, 'HR@10')[1].mean():.4f} | {deltas[0]} | {deltas[1]} | "
            f"{', '.join(str(s.best_epoch) for s in sums)} | "
            f"{np.mean([s['train_seconds'] for s in sums]) / 60:.1f} | "
            f"{mem['total_bytes'] / n_items:,.0f} | {mem['total_bytes'] / mem['full_total_bytes']:.3f} |"
        )
    return lines


# ----------------------------------------------------------------------------- converged grids
def converged_table(
    root: Path,
    name: str,
    title: str,
    published: dict[str, float] | None = None,
    levels: tuple[float, ...] = (),
) -> list[str]:
    """Cells trained to early stopping: test metrics as the mean over seeds with a 95% bootstrap CI
    over users (of each user's metric averaged over the seeds), each cell against the `last` cell
    on the same users (paired), epochs, training time to validation NDCG@10 `levels` and to the
    best epoch, training time in all as a multiple of `last`'s, and tokens to the best epoch."""
    grid = GridDir(root / name)
    cells = sorted(grid.cell_names(), key=lambda c: (not c.startswith("last"), c))
    to = " / ".join([f"{lv:g}" for lv in levels] + ["best"])
    lines = [
        f"### {title}",
        "",
        f"`{grid.path}`; test metrics: mean over seeds [95% bootstrap CI over users]; "
        "Δ vs last: paired on the same users, per-user metrics averaged over seeds; "
        "time × last: training time in all (to early stopping) over `last`'s.",
        "",
        "| cell | seeds | NDCG@10 | HR@10 | MRR | NDCG@10 per seed | Δ NDCG@10 vs last | best epoch | "
        f"epochs run | train min to valid {to} | train min in all | time × last | tokens to best (M) | filtered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for cell in cells:
        runs = grid.evaluated_runs(cell)
        if not runs:
            lines.append(f"| {cell} | 0 | (no finished seed yet) |" + " |" * 11)
            continue
        if base is None and cell.startswith("last"):
            base = runs
        stats = {m: mean_ci(seed_mean_per_user(runs, m)[1]) for m in METRICS}
        lines.append(converged_row(cell, runs, None if runs is base else base, stats, levels))
        if published and cell.startswith("last"):
            lines.append(published_row(published, stats))
    return lines + [""]


def converged_row(
    cell: str,
    runs: list[RunDir],
    base: list[RunDir] | None,
    stats: dict[str, tuple[float, float, float]],
    levels: tuple[float, ...],
) -> str:
    """One cell of `converged_table`, against the `last` cell's runs `base` (None: it is that cell)."""
    delta, ratio = "—", "—"
    if base is not None:
        n = min(len(runs), len(base))  # the same seeds on both sides, as in claim_table
        delta = paired_delta(runs[:n], base[:n], "NDCG@10")
        ratio = f"{mean_train_seconds(runs[:n]) / mean_train_seconds(base[:n]):.2f}×"
    sums = [summary_of(r) for r in runs]
    per_seed = ", ".join(f"{test_metrics(r)['metrics']['NDCG@10']:.4f}" for r in runs)
    filtered = {test_metrics(r).get("filter_seen") for r in runs}
    return (
        f"| {cell} | {len(runs)} | {' | '.join(with_ci(stats[m]) for m in METRICS)} | {per_seed} | "
        f"{delta} | {np.mean([s.best_epoch for s in sums]):.1f} | "
        f"{np.mean([s['epochs'] for s in sums]):.1f} | "
        f"{' / '.join(minutes([time_to(r, lv) for r in runs]) for lv in (*levels, None))} | "
        f"{mean_train_seconds(runs) / 60:.1f} | {ratio} | {np.mean([tokens_to_best(r) for r in runs]) / 1e6:.1f} | "
        f"{'yes' if filtered == {True} else 'no'} |"
    )


def published_row(published: dict[str, float], stats: dict[str, tuple[float, float, float]], empty: int = 10) -> str:
    """The published figures, and where each falls against the `last` cell's CI."""
    inside = {m: stats[m][1] <= v <= stats[m][2] for m, v in published.items()}
    return (
        "| published SASRec+ | | "
        + " | ".join(
            f"{published[m]:.4f} "
            f"({'inside' if inside[m] else 'above' if published[m] > stats[m][2] else 'below'} the CI)"
            for m in ("NDCG@10", "HR@10")
        )
        + " |" * empty
        + " yes |"
    )


def converged_curves(root: Path, name: str, plot_dir: Path | None) -> list[str]:
    """frontier.py's curves.png of a grid (best validation NDCG@10 so far against training time, a
    line per seed of every cell), copied beside RESULTS.md, and the grid's CPU time so far."""
    grid = GridDir(root / name)
    if plot_dir is None or not grid.plot("curves", "png").is_file():
        return []
    plot_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid.plot("curves", "png"), plot_dir / f"{name}-curves.png")
    lines = [f"![{name}: best validation NDCG@10 so far against training time](results/{name}-curves.png)", ""]
    if grid.plot("frontier", "png").is_file():  # frontier.py draws it over the cells finished when it exits
        shutil.copyfile(grid.plot("frontier", "png"), plot_dir / f"{name}-frontier.png")
        lines += [f"![{name}: converged accuracy against training time](results/{name}-frontier.png)", ""]
    return lines + [
        f"CPU time of the runs so far (training and validation, one thread each): {cpu_hours(grid):.1f} h.",
        "",
    ]


def verdict(lo: float, hi: float, claim: float) -> str:
    """What a relative-change CI says about a claimed relative gain."""
    if lo <= 0 <= hi:
        return "within noise"
    if hi < 0:
        return "refuted (a loss)"
    return "confirmed" if lo <= claim <= hi else ("a gain, smaller" if hi < claim else "a gain, larger")


def claim_table(root: Path, names: list[tuple[str, str]]) -> list[str]:
    """Each converged grid's non-`last` cells against its `last` cell, beside the paper's claim:
    relative change of MRR and Recall@10 (HR@10) with paired CIs, and the ratios of training time
    and of training tokens, both to early stopping and averaged over seeds."""
    lines = [
        "| data, cell vs last | seeds | Δ MRR (paper +6.04%) | Δ Recall@10 (paper +6.34%) | "
        "training time ratio (paper ~4×) | tokens ratio | verdict (MRR / Recall@10) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in names:
        grid = GridDir(root / name)
        cells = grid.cell_names()
        base_cell = next((c for c in cells if c.startswith("last")), None)
        base = grid.evaluated_runs(base_cell) if base_cell else []
        for cell in cells:
            runs = grid.evaluated_runs(cell)
            if cell == base_cell or not runs or not base:
                continue
            n = min(len(runs), len(base))
            rel, verdicts = [], []
            for metric in ("MRR", "HR@10"):
                m, lo, hi, ref = seed_paired_delta(runs[:n], base[:n], metric)
                rel.append(f"{m / ref:+.1%} [{lo / ref:+.1%}, {hi / ref:+.1%}]")
                verdicts.append(verdict(lo / ref, hi / ref, PAPER_CLAIM[metric]))
            secs = [mean_train_seconds(rs[:n]) for rs in (runs, base)]
            toks = [np.mean([summary_of(r)["tokens"] for r in rs[:n]]) for rs in (runs, base)]
            lines.append(
                f"| {label}, {cell} | {n} | {rel[0]} | {rel[1]} | {secs[0] / secs[1]:.2f}× | "
                f"{toks[0] / toks[1]:.2f}× | {verdicts[0]} / {verdicts[1]} |"
            )
    return lines + [""]


W200 = "SASRec+ (last, window 200)"
TOWARD_019 = [  # (label, out dir, cell, the label of the configuration it changes)
    (W200, "ml1m-sasrec", "last-w200", None),
    (
        "every window (sliding, window 200, stride 200)",
        "ml1m-sasrec",
        "sliding-w200-s200-hall",
        W200,
    ),
    (
        "the same with 4 blocks and 2 heads",
        "ml1m-sliding-l4h2",
        "sliding-w200-s200-hall",
        "every window (sliding, window 200, stride 200)",
    ),
]

WINDOW_50_VS_200 = [  # ml-1m: the window-50 grid's cells against the last window of 200 (§1's reference)
    (W200, "ml1m-sasrec", "last-w200", None),
    ("every window of 200 (sliding, stride 200)", "ml1m-sasrec", "sliding-w200-s200-hall", W200),
    ("last window of 50", "ml1m-w50-conv", "last-w50", W200),
    ("every window of 50 (sliding, stride 50)", "ml1m-w50-conv", "sliding-w50-s50-hall", W200),
    ("every window of 50, stride 25", "ml1m-w50-conv", "sliding-w50-s25-hall", W200),
    ("mixed, window 50, stride 50", "ml1m-w50-conv", "mixed-w50-s50-hall", W200),
    ("mixed, window 50, stride 25", "ml1m-w50-conv", "mixed-w50-s25-hall", W200),
    ("a random window of 50 per user per epoch", "ml1m-w50-conv", "random-w50-hall", W200),
]

L4_LR2 = "4 blocks, 2 heads, every window of 200, learning rate 2e-3"
TOWARD_020 = [  # §5: the 4-block model of §1 at learning rate 2e-3, and with the history before each window
    (L4_LR2, "ml1m-sliding-l4h2-lr2e-3", "sliding-w200-s200", None),
    (
        "the same + the 200 events before: 4 learned queries (attention), two threads",
        "ml1m-sliding-l4h2-lr2e-3-summary200",
        "sliding-w200-s200",
        L4_LR2,
    ),
    (
        "the same with dropout 0.2, two threads, then one",
        "ml1m-sliding-l4h2-lr2e-3-dropout02",
        "sliding-w200-s200",
        L4_LR2,
    ),
    (
        "the same, validated and kept as a moving average of the weights (--ema-decay 0.995)",
        "ml1m-sliding-l4h2-lr2e-3-ema0995",
        "sliding-w200-s200",
        L4_LR2,
    ),
]

W50 = "ml-1m, every window of 50 (sliding, stride 50)"
ML1M_W50 = ("ml1m-w50-conv", "sliding-w50-s50-hall")  # (out dir, cell) of §2's W50
BEAUTY_LAST50 = "amazon-beauty, last 50 events"
HISTORY_SUMMARY = [  # §5: a window plus a summary of the 200 events before it, against the window alone
    (W50, *ML1M_W50, None),
    ("the same + the 200 events before: mean of 4 runs of 50", "ml1m-w50-summary200", "sliding-w50-s50-hall", W50),
    (
        "the same + the 200 events before: 4 learned queries (attention)",
        "ml1m-w50-summary200-attention",
        "sliding-w50-s50-hall",
        W50,
    ),
    (BEAUTY_LAST50, "beauty-emb-full", "last-w50", None),
    ("amazon-beauty + the 200 events before: mean of 4 runs of 50", "beauty-summary200", "last-w50", BEAUTY_LAST50),
]
INPUT_LENGTH = {  # §5: longer inputs, every window against the last window of the same length
    w: [
        (f"ml-1m, last window of {w}", f"ml1m-w{w}", f"last-w{w}", None),
        (
            f"every window of {w} (sliding, stride {w})",
            f"ml1m-w{w}",
            f"sliding-w{w}-s{w}",
            f"ml-1m, last window of {w}",
        ),
    ]
    for w in (400, 800)
}
FAST_RECIPE = [  # §1: the fast recipe, 20 minutes of training on both cores of the idle machine (results.sh fast)
    ("2 blocks, 1 head", "ml1m-fast/run", None, 0),  # a train.py run dir
    ("4 blocks, 2 heads", "ml1m-fast-l4h2", "sliding-w200-s200", 0),  # a frontier.py grid's cell and seed
]
FAST_EMA = "ml1m-fast-l4h2-lr2e-3-ema0995"
FAST_CHANGES = [  # §1: one change each to the 4-block fast recipe, same 20 minutes (results.sh fast)
    (
        "4 blocks, 2 heads, rate decayed to zero by epoch 42 (cosine), seed 0",
        "ml1m-fast-l4h2-cosine",
        "sliding-w200-s200",
        0,
    ),
    *(
        (f"4 blocks, 2 heads, learning rate 2e-3, seed {s}", "ml1m-fast-l4h2-lr2e-3", "sliding-w200-s200", s)
        for s in (0, 1, 2)
    ),
    *((f"the same + moving average of the weights, seed {s}", FAST_EMA, "sliding-w200-s200", s) for s in (0, 1, 2)),
]
FAST_LR2 = "4 blocks, 2 heads, learning rate 2e-3, 20 minutes"
FAST_EMA_PAIRED = [  # §1: the same seeds with and without the moving average, paired on the test users
    (FAST_LR2, "ml1m-fast-l4h2-lr2e-3", "sliding-w200-s200", None),
    (
        "the same, validated and kept as a moving average of the weights (--ema-decay 0.995)",
        FAST_EMA,
        "sliding-w200-s200",
        FAST_LR2,
    ),
]
FAST_LEVELS = (0.15, 0.17, 0.1821, 0.19)


def changes_table(root: Path, rows: list[tuple[str, str, str, str | None]], strict: bool = False) -> list[str]:
    """Configurations (converged, or stopped at one budget), each against the one it changes: test
    metrics over its seeds [95% CI over users] and the paired difference on the seeds both have. A
    row without runs is left out, or, when `strict`, the table is not made (MissingRuns)."""
    lines = [
        "| configuration | seeds | NDCG@10 | HR@10 | against | Δ NDCG@10 [paired CI] | Δ HR@10 [paired CI] | "
        "best epoch | train min in all | time × | matmuls, batches |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    done: dict[str, list[RunDir]] = {}
    for label, folder, cell, against in rows:
        runs = evaluated(root, folder, cell) if strict else GridDir(root / folder).evaluated_runs(cell)
        if not runs:
            continue
        done[label] = runs
        stats = {m: mean_ci(seed_mean_per_user(runs, m)[1]) for m in ("NDCG@10", "HR@10")}
        cols = ["—"] * 4
        if against in done:
            base = done[against]
            n = min(len(runs), len(base))
            seeds = "" if n == max(len(runs), len(base)) else f", {n} seed{'s' * (n > 1)}"
            cols = [against, *(paired_delta(runs[:n], base[:n], m) + seeds for m in ("NDCG@10", "HR@10"))]
            cols.append(f"{mean_train_seconds(runs[:n]) / mean_train_seconds(base[:n]):.2f}×")
        config = runs[0].config()
        matmuls = "bf16" if config["precision"] == "bf16" else "fp32"  # auto is fp32 on a CPU
        speed = f"{matmuls}, {'grouped by length' if config['group_by_length'] else 'in order'}"
        lines.append(
            f"| {label} | {len(runs)} | {' | '.join(with_ci(v) for v in stats.values())} | {' | '.join(cols[:3])} | "
            f"{np.mean([summary_of(r).best_epoch for r in runs]):.1f} | {mean_train_seconds(runs) / 60:.1f} | "
            f"{cols[3]} | {speed} |"
        )
    return lines + [""]


def recipe_table(
    root: Path, rows: list[tuple[str, str, str | None, int]], levels: tuple[float, ...], strict: bool = False
) -> list[str]:
    """Single runs stopped at a training budget: test metrics at their best validation epoch and the
    training minutes (validation excluded) until validation NDCG@10 reached each level.
    A run not finished gets a "not finished" row, or raises MissingRuns if `strict`."""
    head = " / ".join(f"{lv:g}" for lv in levels)
    lines = [
        f"| run | NDCG@10 | HR@10 | best valid NDCG@10 (epoch) | train min to valid {head} | "
        "train min in all | threads | precision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, folder, cell, seed in rows:  # a run dir, or a seed of a grid's cell
        run = RunDir(root / folder) if cell is None else GridDir(root / folder).run(cell, seed)
        t, s = test_metrics(run), run.summary()
        if not t or not s:
            if strict:
                raise MissingRuns(f"{run.path}: not evaluated")
            lines.append(f"| {label} | (not finished: {run.path}) |" + " |" * 6)
            continue
        m, ci = t["metrics"], t["ci"]
        lines.append(
            f"| {label} | {m['NDCG@10']:.4f} [{ci['NDCG@10'][0]:.4f}, {ci['NDCG@10'][1]:.4f}] | "
            f"{m['HR@10']:.4f} [{ci['HR@10'][0]:.4f}, {ci['HR@10'][1]:.4f}] | "
            f"{s['best_valid_ndcg10']:.4f} ({s.best_epoch}) | "
            f"{' / '.join(minutes([time_to(run, lv)]) for lv in levels)} | "
            f"{s['train_seconds'] / 60:.1f} | {run.config()['threads']} | {s['precision']} |"
        )
    return lines + [""]


# ----------------------------------------------------------------------------- docs/RESULTS.md's tables
BEAUTY_FULL, ML1M_FULL = ("beauty-emb-full", "last-w50"), ("ml1m-sasrec", "last-w200")  # (out dir, cell)
RETAILROCKET_FULL = ("retailrocket-emb-full", "last-w10")
BEAUTY_HASHED = (  # results.sh's hashed and low-rank embeddings on amazon-beauty (EMB_VARIANTS)
    "kshift-c4",
    "lowrank-c4",
    "kshift-c16",
    "kshift-c16-weights",
    "kshift-c16-rowwise",
    "kshift-c32-head378-weights",
    "lowrank-c16",
    "kshift-c64",
    "lowrank-c64",
)
ML1M_HASHED = ("kshift-c4", "lowrank-c4", "kshift-c16", "lowrank-c16", "kshift-c32-head106-weights")
CONVERGED_EMBEDDINGS = [  # RESULTS §4, at convergence: (data label, out-dir prefix, reference, variants)
    ("amazon-beauty", "beauty", BEAUTY_FULL, BEAUTY_HASHED),
    ("ml-1m", "ml1m", ML1M_FULL, ML1M_HASHED),
]


def evaluated(root: Path, folder: str, cell: str) -> list[RunDir]:
    """A cell's evaluated runs; MissingRuns when it has none."""
    runs = GridDir(root / folder).evaluated_runs(cell)
    if not runs:
        raise MissingRuns(f"{root / folder}: no evaluated run of {cell}")
    return runs


def filtered(runs: list[RunDir]) -> str:
    """yes when every run ranked with seen items filtered out."""
    return "yes" if {test_metrics(r).get("filter_seen") for r in runs} == {True} else "no"


def sasrec_table(root: Path, rows: list[tuple[str, str, str, str | None]], published: dict[str, float]) -> list[str]:
    """RESULTS §1: each configuration against the one it changes (paired, on the seeds both have),
    the published figures placed against the first row's CI, and what the runs computed with."""
    lines = [
        "| configuration | seeds | NDCG@10 | HR@10 | NDCG@10 per seed | Δ NDCG@10 [paired CI] | Δ HR@10 [paired CI] | "
        "best epoch | train min in all | time × | matmuls, batches | filtered |",
        "|---" * 12 + "|",
    ]
    done: dict[str, list[RunDir]] = {}
    for label, folder, cell, against in rows:
        runs = done[label] = evaluated(root, folder, cell)
        stats = {m: mean_ci(seed_mean_per_user(runs, m)[1]) for m in ("NDCG@10", "HR@10")}
        if against is None:
            lines.append(published_row(published, stats, empty=7))
        cols = ["—"] * 3
        if against is not None:
            base = done[against]
            n = min(len(runs), len(base))
            cols = [paired_delta(runs[:n], base[:n], m) for m in ("NDCG@10", "HR@10")]
            cols.append(f"{mean_train_seconds(runs[:n]) / mean_train_seconds(base[:n]):.2f}×")
        config = runs[0].config()
        matmuls = "bf16" if config["precision"] == "bf16" else "fp32"  # auto is fp32 on a CPU
        per_seed = ", ".join(f"{test_metrics(r)['metrics']['NDCG@10']:.4f}" for r in runs)
        lines.append(
            f"| {label} | {len(runs)} | {with_ci(stats['NDCG@10'])} | {with_ci(stats['HR@10'])} | {per_seed} | "
            f"{cols[0]} | {cols[1]} | {np.mean([summary_of(r).best_epoch for r in runs]):.1f} | "
            f"{mean_train_seconds(runs) / 60:.1f} | {cols[2]} | {matmuls}, "
            f"{'grouped by length' if config['group_by_length'] else 'in order'} | {filtered(runs)} |"
        )
    return lines


def regimes_table(root: Path, grids: list[tuple[str, str]]) -> list[str]:
    """RESULTS §2: each converged grid's cells against its `last` cell, paired on the same test users
    and seeds, beside the paper's claim (relative MRR and Recall@10 with CIs, time and tokens ratios)."""
    lines = [
        "| data, window | cell | seeds | NDCG@10 | Δ NDCG@10 vs last | Δ MRR (paper +6.04%) | "
        "Δ Recall@10 (paper +6.34%) | train min in all | time × last (paper ~4×) | tokens × | filtered |",
        "|---" * 11 + "|",
    ]
    for name, label in grids:
        grid = GridDir(root / name)
        order = [c["name"] for c in (grid.read_frontier() or {}).get("cells", [])] or grid.cell_names()
        base_cell = next((c for c in order if c.startswith("last")), "last")
        base = evaluated(root, name, base_cell)
        for cell in [base_cell, *(c for c in order if c != base_cell)]:
            runs = evaluated(root, name, cell)
            n = min(len(runs), len(base))
            cols = ["—"] * 5
            if cell != base_cell:
                rel = []
                for metric in ("MRR", "HR@10"):
                    m, lo, hi, ref = seed_paired_delta(runs[:n], base[:n], metric)
                    rel.append(f"{m / ref:+.1%} [{lo / ref:+.1%}, {hi / ref:+.1%}]")
                toks = [np.mean([summary_of(r)["tokens"] for r in rs[:n]]) for rs in (runs, base)]
                ratio = mean_train_seconds(runs[:n]) / mean_train_seconds(base[:n])
                cols = [paired_delta(runs[:n], base[:n], "NDCG@10"), *rel, f"{ratio:.2f}×", f"{toks[0] / toks[1]:.2f}×"]
            lines.append(
                f"| {label} | {cell} | {len(runs)} | {with_ci(mean_ci(seed_mean_per_user(runs, 'NDCG@10')[1]))} | "
                f"{' | '.join(cols[:3])} | {mean_train_seconds(runs) / 60:.1f} | {cols[3]} | {cols[4]} | "
                f"{filtered(runs)} |"
            )
    return lines


def variant_rows(data: str, ref: tuple[str, str], variants: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """results.sh's item-embedding runs of `data` beside the full table's cell: (label, out dir, cell)."""
    return [(EMB_VARIANTS[v], f"{data}-emb-{v}", f"{ref[1]}-{v.split('-')[0]}") for v in variants]


def document_tables(root: Path) -> dict[str, Callable[[], list[str]]]:
    """docs/RESULTS.md's tables by the key of their marker, each made on demand (MissingRuns if it can't be)."""
    regimes = [
        ("ml1m-w50-conv", "ml-1m w50"),
        ("ml1m-sasrec", "ml-1m w200"),
        ("ml100k-w50-conv", "ml-100k w50"),
        ("retailrocket-w10-conv", "retailrocket w10"),
        ("beauty-w20-conv", "amazon-beauty w20"),
    ]
    beauty_codes = variant_rows("beauty", BEAUTY_FULL, ("codes-m8", "codes-m32", "kshift-codes-c64", "kshift-paper"))
    ml1m_codes = [("codes (RecJPQ), m = 8 of 128 values", "ml1m-w50-codes-m8-c128", "sliding-w50-s50-codes")]

    def item_codes() -> list[str]:
        return [
            "| data " + EMB_HEAD,
            "|---" * 11 + "|",
            *embedding_rows(root, BEAUTY_FULL, beauty_codes, strict=True, data="amazon-beauty, last 50"),
            *embedding_rows(root, ML1M_W50, ml1m_codes, strict=True, data="ml-1m, every window of 50"),
        ]

    def item_codes_pq() -> list[str]:
        rows = variant_rows("beauty", BEAUTY_FULL, ("codes-pq-m8", "codes-pq-m8-r2"))
        sessions = variant_rows("retailrocket", RETAILROCKET_FULL, ("codes-pq-m8-r2", "codes-pq-m8-r3"))
        return [
            "| data " + EMB_HEAD,
            "|---" * 11 + "|",
            *embedding_rows(root, BEAUTY_FULL, rows, strict=True, data="amazon-beauty, last 50"),
            *embedding_rows(root, RETAILROCKET_FULL, sessions, strict=False, data="retailrocket sessions, last 10"),
        ]

    def as_they_finish(rows: list[tuple[str, str, str, str | None]]) -> list[str]:
        evaluated(root, *rows[0][1:3])  # the rows come as they finish, once the first has
        return changes_table(root, rows)

    def converged_embeddings() -> list[str]:
        lines = ["| data " + EMB_HEAD, "|---" * 11 + "|"]
        for data, prefix, ref, variants in CONVERGED_EMBEDDINGS:
            lines += embedding_rows(root, ref, variant_rows(prefix, ref, variants), strict=True, data=data)
        return lines

    return {
        "sasrec-ml1m": lambda: sasrec_table(root, TOWARD_019, PUBLISHED),
        "regimes-converged": lambda: regimes_table(root, regimes),
        "item-codes": item_codes,
        "embeddings-converged": converged_embeddings,
        "item-codes-pq": item_codes_pq,
        "history-summary": lambda: changes_table(root, HISTORY_SUMMARY, strict=True),
        "toward-020": lambda: as_they_finish(TOWARD_020),
        "input-length-400": lambda: as_they_finish(INPUT_LENGTH[400]),
        "input-length-800": lambda: as_they_finish(INPUT_LENGTH[800]),
        "fast-recipe": lambda: recipe_table(root, FAST_RECIPE, FAST_LEVELS, strict=True),
        "fast-recipe-changes": lambda: recipe_table(root, FAST_CHANGES, FAST_LEVELS, strict=True),
        "fast-recipe-ema": lambda: changes_table(root, FAST_EMA_PAIRED, strict=True),
    }


def update_document(doc: Path, tables: dict[str, Callable[[], list[str]]], log: Callable[[str], None]) -> None:
    """Rewrite the tables `doc` marks (longrec_core.report.rewrite_marked); the file is replaced atomically."""
    try:
        new = rewrite_marked(doc.read_text(), tables, log)
    except KeyError as e:
        cli.fail(f"{doc} marks tables the report does not make: {e.args[0]}")
    with cli.atomic_write(doc) as tmp:
        tmp.write_text(new)


# ----------------------------------------------------------------------------- the whole report
CONVERGED_GRIDS = [  # (out dir, label in the claim table, title)
    ("ml100k-w50-conv", "ml-100k w50", "ml-100k (sessions cut at 30-minute gaps), window 50, to convergence"),
    ("beauty-w20-conv", "amazon-beauty w20", "amazon-beauty, window 20, to convergence"),
    ("retailrocket-w10-conv", "retailrocket w10", "retailrocket sessions, window 10, to convergence"),
    ("ml1m-w50-conv", "ml-1m w50", "ml-1m, window 50, to convergence"),
]
BUDGET_GRIDS = [  # (out dir, title)
    ("ml1m-w200", "ml-1m, window 200: last vs sliding vs mixed (8 min of training each)"),
    ("ml1m-w50", "ml-1m, window 50: 3 seeds (3 min of training each)"),
    ("beauty-w20", "amazon-beauty, window 20 (2 min each)"),
    ("retailrocket-w10", "retailrocket sessions, window 10 (2 min each)"),
    ("mlls-w50", "ml-latest-small, temporal split, window 50 (90 s each)"),
]
EMBEDDING_RUNS = [  # (data, reference (out dir, cell), variants (EMB_VARIANTS), title)
    (
        "beauty",
        BEAUTY_FULL,
        ("codes-m8", "codes-m32", "kshift-codes-c64", "kshift-paper", *BEAUTY_HASHED),
        "amazon-beauty (last, window 50",
    ),
    (
        "ml1m",
        ML1M_FULL,
        ("codes-m8-c128", "codes-m8-c64", "kshift-paper", *ML1M_HASHED),
        "ml-1m (SASRec+, last, window 200",
    ),
]


def converged_sections(root: Path, plots: Path | None) -> list[str]:
    """The grids trained to early stopping, the paper's claim at convergence, and the ml-1m changes."""
    lines = converged_table(
        root,
        "ml1m-sasrec",
        "ml-1m, window 200, SASRec+ configuration, to convergence",
        published=PUBLISHED,
        levels=(0.15, 0.17),
    )
    lines += converged_curves(root, "ml1m-sasrec", plots)
    for name, _, title in CONVERGED_GRIDS:
        lines += converged_table(root, name, title)
        lines += converged_curves(root, name, plots)
    lines += ["### The paper's claim, at convergence", ""]
    lines += claim_table(root, [("ml1m-sasrec", "ml-1m w200")] + [(name, label) for name, label, _ in CONVERGED_GRIDS])
    lines += ["### ml-1m: toward test NDCG@10 0.19, to convergence", ""]
    lines += changes_table(root, TOWARD_019)
    lines += ["### ml-1m: window 50 against window 200, to convergence", ""]
    lines += changes_table(root, WINDOW_50_VS_200)
    lines += ["### History before the window, to convergence", ""]
    lines += changes_table(root, HISTORY_SUMMARY)
    lines += ["### ml-1m: longer inputs, to convergence", ""]
    for rows in INPUT_LENGTH.values():
        lines += changes_table(root, rows)
    lines += ["### ml-1m: the 20-minute recipe (two threads, idle machine)", ""]
    lines += recipe_table(root, FAST_RECIPE + FAST_CHANGES, FAST_LEVELS)
    lines += changes_table(root, FAST_EMA_PAIRED)
    for grid in ("ml1m-fast-l4h2", "ml1m-fast-l4h2-lr2e-3", FAST_EMA):
        lines += converged_curves(root, grid, plots)
    return lines


def kshift_rows(folder_prefix: str, cell: str) -> list[tuple[str, str, str]]:
    """results.sh's k-shift runs beside a full table's run: (label, out dir, cell)."""
    return [(f"k-shift c{c}", f"{folder_prefix}-kshift-c{c}", cell + "-kshift") for c in (4, 16, 64)] + [
        ("k-shift c16, signed shift (paper code)", f"{folder_prefix}-kshift-c16-signed", cell + "-kshift")
    ]


def single_run_sections(root: Path) -> list[str]:
    """k-shift and the losses against the full table and full CE, and the item embeddings at convergence."""
    lines = versus_table(
        root,
        ("ml1m-loss-ce", "sliding-w50-s50-hall"),
        kshift_rows("ml1m", "sliding-w50-s50-hall"),
        "k-shift on ml-1m (sliding, window 50, 3 min each; reference = full table)",
        extra="kshift",
    )
    lines += versus_table(
        root,
        ("beauty-w20", "sliding-w20-s10-hall"),
        kshift_rows("beauty", "sliding-w20-s10-hall"),
        "k-shift on amazon-beauty (sliding, window 20, 2 min each; reference = full table, seed 0)",
        extra="kshift",
    )
    for data, ref, variants, title in EMBEDDING_RUNS:
        rows = variant_rows(data, ref, variants)
        lines += embedding_table(root, ref, rows, f"{title}, filtered): item embeddings at convergence")
    loss_rows = [("chunked CE", "ml1m-loss-chunked", "sliding-w50-s50-hall")] + [
        (f"sampled softmax, {n} negatives", f"ml1m-loss-sampled{n}", "sliding-w50-s50-hall") for n in (64, 256, 1024)
    ]
    return lines + versus_table(
        root,
        ("ml1m-loss-ce", "sliding-w50-s50-hall"),
        loss_rows,
        "Losses on ml-1m (sliding, window 50, 3 min each; reference = full CE)",
    )


def main() -> None:
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", nargs="?", default="runs/results", help="the results dir of docs/results.sh")
    p.add_argument("plots", nargs="?", default=None, help="where the learning-curve PNGs go (default: none)")
    p.add_argument(
        "--update",
        metavar="DOC",
        default=None,
        help="rewrite the tables DOC marks with <!-- report: KEY --> ... <!-- /report --> (docs/RESULTS.md) "
        "instead of printing the whole report",
    )
    args = p.parse_args()
    root, plots = Path(args.root), None if args.plots is None else Path(args.plots)
    if not root.is_dir():
        cli.fail(f"{root} is not a directory (the results dir of docs/results.sh)")
    if args.update is not None:
        doc = Path(args.update)
        if not doc.is_file():
            cli.fail(f"{doc} is not a file")
        update_document(doc, document_tables(root), log=lambda m: print(m, file=sys.stderr))
        return
    lines = ["# Tables generated by scripts/report.py from " + str(root), ""]
    lines += converged_sections(root, plots)
    for name, title in BUDGET_GRIDS:
        lines += grid_table(root, name, title)
        lines += curves_table(root, name, plots)
    lines += single_run_sections(root)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
