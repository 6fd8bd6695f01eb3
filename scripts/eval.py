"""Evaluate a trained run: rank the whole catalogue for every test (or validation) target.

    python scripts/eval.py --run runs/demo/sliding              # test split -> runs/demo/sliding/metrics_test.json
    python scripts/train.py --stride 64 | python scripts/eval.py   # the run dir arrives on stdin
    python scripts/eval.py                                      # the newest run under runs/
    python scripts/eval.py --run runs/a --split valid --filter-seen --bootstrap 2000
    python scripts/eval.py --run runs/a --compare runs/b        # paired test on the common users
                                                                # (evaluate runs/b with the same flags first)

Protocol (README.md, "eval.py"): the history of a target is the `window` events before it, window =
the model's max_len; every item 1..N is a candidate (no sampled negatives, padding never
ranked); rank = 1 + number of other items scoring >= the target, so ties count against the
model; with seen items filtered, the items of the user's whole history before the target are
dropped from the competitors by the rule the run validated with (train.py --filter-seen; auto,
the default, filters exactly when no validation or test target repeats a seen item). Metrics: HR@K,
NDCG@K, MRR@K for each K and the untruncated MRR, each with a 95% percentile-bootstrap interval
over users.

Writes (atomically) the metrics JSON and, beside it, the per-user ranks
(`metrics_test.ranks.npz`: users, ranks and what they were computed on) so that another run
can be compared with --compare. The default output in the run dir is rewritten by every
evaluation; an explicit --out that exists is replaced only with --force. stdout: the metrics
JSON's path, one line; the table goes to stderr.
"""

from __future__ import annotations

# First, before torch and polars load: Ctrl-C or SIGTERM while they do ends the stage quietly (exit 130).
import longrec_core.startup  # noqa: F401  # isort: skip

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from longrec_core.choices import FILTER_SEEN_CHOICES, KS, SPLITS
from longrec_core.cli import (
    ArgumentParser,
    add_scoring_flags,
    atomic_write,
    check_int,
    check_parent_dir,
    console,
    fail,
    input_path,
    keep_freed_memory,
    print_path,
    progress,
    stage_main,
    stdin_piped,
    torch_device,
)
from longrec_core.datadir import DataDir, fingerprint, load_data_dir, load_shards, shard_count
from longrec_core.metrics import (
    bootstrap_ci,
    evaluate,
    metrics_from_ranks,
    paired_comparison,
    per_user,
    resolve_filter_seen,
)
from longrec_core.model import SASRec, load_model
from longrec_core.rundir import RunDir, RunDirError, Summary, newest_run, ranks_path

# Far more resamples than an interval or a p-value needs; a larger --bootstrap is a typo that would exhaust
# memory (the resampled means are resamples x metrics floats).
MAX_BOOTSTRAP = 1_000_000

p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
# what to evaluate
p.add_argument(
    "--run",
    default=None,
    help="run dir written by train.py (default: read from stdin when piped, else the newest run under runs/)",
)
p.add_argument("--data", default=None, help="data dir (default: the run's config.json 'data')")
p.add_argument("--split", default="test", choices=SPLITS, help="which targets to rank (default: test)")
p.add_argument(
    "--filter-seen",
    nargs="?",
    const="yes",
    default=None,
    choices=FILTER_SEEN_CHOICES,
    help="exclude items of the user's history before the target from the competitors: yes (also a bare "
    "--filter-seen), no, or auto = yes when no validation or test target of the data dir repeats a "
    "seen item (the published protocol on ml-1m and Amazon), no where repeats are legitimate targets "
    "(default: the rule the run validated with, from its config.json; auto without one)",
)
# metrics
p.add_argument("--ks", default=",".join(map(str, KS)), help="cut-offs K for HR/NDCG/MRR@K (default: %(default)s)")
p.add_argument(
    "--bootstrap",
    type=int,
    default=1000,
    help=f"bootstrap resamples of users for the 95%% intervals, at most {MAX_BOOTSTRAP:,}; 0 = no "
    "intervals. --compare draws max(this, 1000) resamples and sign flips (default: %(default)s)",
)
p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation draws (default: %(default)s)")
# comparison
p.add_argument(
    "--compare",
    default=None,
    help="another run dir (or its metrics JSON or .ranks.npz) evaluated with the same split, data and --filter-seen: "
    "prints a paired comparison on the common users (default: none)",
)
p.add_argument("--metrics", default="HR@10,NDCG@10,MRR", help="metrics compared with --compare (default: %(default)s)")
# compute
p.add_argument(
    "--sample-users",
    type=int,
    default=None,
    help="rank only a seeded random sample of this many targets (per shard: this / shards), each on the "
    "full catalogue; for catalogues of 10^7 items on a CPU (default: every target)",
)
p.add_argument(
    "--history-summary",
    choices=("yes", "no"),
    default="yes",
    help="a run trained with a history summary (train.py --summary-events) reads the events before the window "
    "too; `no` predicts from the window alone (default: %(default)s)",
)
add_scoring_flags(p)
# output
p.add_argument("--out", default=None, help="metrics JSON path (default: RUN/metrics_SPLIT.json); ranks go beside it")
p.add_argument("--force", action="store_true", help="replace an existing --out and its ranks file (default: refuse)")


def check_out(out: Path, explicit: bool, force: bool) -> None:
    """Refuse, before any work, an output that cannot be written, or an explicit --out that would
    replace a file without --force (the default output in the run dir is rewritten each time).

    The ranks file is written first and the metrics JSON last (`write_outputs`), so a ranks file
    without its metrics JSON is what a killed evaluation left: it is replaced, not refused."""
    for path in (out, ranks_path(out)):
        if path.is_dir():
            fail(f"cannot write {path}: it is a directory")
        orphan = path != out and not os.path.lexists(out) and is_ranks_file(path)
        if explicit and not force and os.path.lexists(path) and not orphan:
            fail(f"{path} already exists; pass --force to replace it, or another --out")
    check_parent_dir(out)


def is_ranks_file(path: Path) -> bool:
    """Whether `path` is a ranks file that eval.py wrote (an .npz with users and ranks)."""
    try:
        with np.load(path) as z:
            return {"users", "ranks"} <= set(z.files)
    except Exception:  # whatever np.load raises on a file that is not an .npz
        return False


def config_data_dir(run: RunDir) -> str:
    """The data dir named by the run's config.json, for when --data is not given."""
    try:
        data = run.read_config().data
    except RunDirError as e:
        fail(f"{e}; pass --data DATA_DIR")
    if data is None:
        fail(f"{run.config_path} names no data dir; pass --data DATA_DIR")
    return data


def load_ranks(path: Path) -> dict[str, np.ndarray]:
    """The per-user ranks file of another evaluation (for --compare), checked so that the pairing
    by user cannot go wrong."""
    try:
        with np.load(path) as z:
            other = {k: z[k] for k in z.files}
    except Exception as e:  # whatever np.load raises on a file that is not an .npz (empty, truncated, other)
        fail(f"{path} is not a ranks file written by eval.py ({type(e).__name__})")
    users, ranks = other.get("users"), other.get("ranks")
    if (
        users is None
        or ranks is None
        or users.ndim != 1
        or users.shape != ranks.shape
        or not np.issubdtype(users.dtype, np.integer)
        or not np.issubdtype(ranks.dtype, np.integer)
    ):
        fail(f"{path} is damaged: it must hold integer arrays users and ranks of one length")
    if len(np.unique(users)) != len(users) or (ranks < 1).any():
        fail(f"{path} is damaged: a user appears twice or a rank is below 1")
    return other


# the training costs a comparison shows: summary.json key, label, format
COSTS = (
    ("train_seconds", "training seconds", "{:,.1f}"),
    ("tokens", "training tokens", "{:,.0f}"),
    ("epochs", "epochs", "{:,.0f}"),
)


def read_costs(run: RunDir) -> Summary | None:
    """A run's summary when it holds the training costs a comparison shows, else None (a missing or
    damaged one only leaves the costs out: the metrics are written by then)."""
    summary = run.summary()
    ok = summary is not None and all(isinstance(summary.get(key), (int, float)) for key, _, _ in COSTS)
    return summary if ok else None


def read_settings(args: argparse.Namespace) -> tuple[tuple[int, ...], list[str]]:
    """Check every setting before any work: the cut-offs K, the compared metrics and the integers."""
    try:
        ks = tuple(sorted({int(k) for k in args.ks.split(",")}))
    except ValueError:
        fail(f"--ks must be comma-separated integers, got {args.ks!r}")
    if not ks or ks[0] < 1:
        fail(f"--ks must be positive integers, got {args.ks!r}")
    compare_metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for m in compare_metrics:
        per_user(np.ones(1, dtype=np.int64), m)  # ValueError (-> one sentence) on an unknown name
    for flag, value, lo in (
        ("--sample-users", args.sample_users, 1),
        ("--batch-size", args.batch_size, 1),
        ("--item-chunk", args.item_chunk, 1),
        ("--seed", args.seed, 0),
    ):
        check_int(flag, value, lo)
    check_int("--bootstrap", args.bootstrap, 0, MAX_BOOTSTRAP)
    return ks, compare_metrics


def find_run(arg: str | None) -> RunDir:
    """The run dir: --run, else a path piped on stdin, else the newest finished run under runs/
    (one whose training has ended: `RunDir.finished`; a run still training or stopped is skipped)."""
    if arg is None and not stdin_piped():
        newest = newest_run(Path("runs"), finished=True)
        if newest is None:
            fail("no run given and no finished run under runs/; pass --run RUN_DIR")
        run = newest
    else:
        run = RunDir(input_path(arg, "run dir"))
    if not run.path.is_dir():
        fail(f"run dir {run.path} {'is a file' if run.path.exists() else 'does not exist'}")
    if not run.has_model():
        fail(f"{run.path} has no {run.model_path.name} (not a run dir, or its training has not finished)")
    why = run.unfinished_reason()
    if why is not None:  # its model.pt holds the best weights so far, not the run's
        fail(f"{run.path} cannot be evaluated: {why}; finish it with python scripts/train.py --resume {run.path}")
    return run


def output_path(args: argparse.Namespace, run: RunDir) -> Path:
    """The metrics JSON to write (--out, else RUN/metrics_SPLIT.json), checked before any work."""
    if args.out is not None and not args.out.strip():
        fail("--out is empty: give a path for the metrics JSON, or leave --out out")
    out = Path(args.out) if args.out is not None else run.metrics_path(args.split)
    check_out(out, explicit=args.out is not None, force=args.force)
    return out


def load_run(run: RunDir, data_dir: str, device: torch.device) -> tuple[SASRec, DataDir, int]:
    """(model on `device`, the data dir or its first shard, the number of shards: 0 = not sharded)."""
    n_shards = shard_count(data_dir)
    # a sharded dir is ranked one shard at a time (memory bounded by a shard); users are numbered
    # across the shards in order, as load_data_dir(root) would number them
    data = load_shards(data_dir, [0]) if n_shards else load_data_dir(data_dir)
    try:  # on the CPU first, so that a damaged file is not mistaken for a device that cannot hold the model
        model = load_model(run.path)
    except Exception as e:  # whatever torch.load or load_state_dict raises on a damaged or foreign file
        fail(f"{run.model_path} is not a model saved by train.py, or is damaged ({type(e).__name__})")
    model = model.to(device)
    if data.n_items != model.n_items:
        fail(
            f"data dir {data_dir} has {data.n_items:,} items but the model in {run.path} was trained on "
            f"{model.n_items:,}; pass the data dir it was trained on with --data"
        )
    trained_on = run.config().data_fingerprint  # older runs did not record it: the item count only
    if trained_on is not None and trained_on != fingerprint(data):
        fail(
            f"data dir {data_dir} is not the one {run.path} was trained on (its manifest differs from the one the "
            "run recorded); pass the run's data dir with --data"
        )
    return model, data, n_shards


def load_other(args: argparse.Namespace, mine: dict[str, object]) -> dict[str, np.ndarray]:
    """The ranks of the run to --compare with, checked before the work to share `mine` (split, data,
    filter and catalogue)."""
    other_npz = Path(args.compare)
    if other_npz.is_dir():
        other_npz = RunDir(other_npz).ranks_path(args.split)
    elif other_npz.suffix == ".json":  # a metrics file: its ranks lie beside it
        other_npz = ranks_path(other_npz)
    if not other_npz.is_file():
        fail(
            f"{other_npz} does not exist: evaluate the other run first "
            f"(python scripts/eval.py --run {args.compare} --split {args.split})"
        )
    other = load_ranks(other_npz)
    for key, value in mine.items():
        if key not in other or other[key].tolist() != value:
            theirs = other[key].tolist() if key in other else "unknown"
            fail(f"cannot compare: {other_npz} was evaluated with {key} = {theirs}, this run with {value}")
    return other


def rank_targets(
    model: SASRec,
    data: DataDir,
    data_dir: str,
    n_shards: int,
    args: argparse.Namespace,
    device: torch.device,
    filter_seen: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(users, ranks) of every target of the split (or of a seeded sample), ranked on the full
    catalogue, one shard at a time; users are numbered across the shards in order."""
    n_targets = data.manifest["split"][f"{args.split}_targets"] if n_shards else len(data.eval_targets(args.split)[0])
    sample = None if args.sample_users is None else -(-args.sample_users // max(1, n_shards))  # per dir or shard
    if sample is not None:
        n_targets = min(n_targets, sample * max(1, n_shards))
    if n_targets == 0:
        fail(f"the {args.split} split of {data_dir} has no targets")
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    user_base = target_base = 0
    with progress() as bar:
        task = bar.add_task(f"ranking {data.n_items:,} items", total=n_targets)
        for k in range(max(1, n_shards)):
            if k > 0:
                data = load_shards(data_dir, [k])
            shard_users, shard_ranks = evaluate(
                model,
                data,
                args.split,
                batch_size=args.batch_size,
                device=device,
                filter_seen=filter_seen,
                item_chunk=args.item_chunk,
                on_batch=lambda done, total, base=target_base: bar.update(task, completed=base + done),
                sample=sample,
                sample_seed=args.seed,
                summary=args.history_summary == "yes",
            )
            parts.append((shard_users + user_base, shard_ranks))
            user_base, target_base = user_base + data.n_users, target_base + len(shard_users)
    users, ranks = (np.concatenate([part[i] for part in parts]) for i in range(2))
    return users, ranks


def paired(
    args: argparse.Namespace,
    run: RunDir,
    users: np.ndarray,
    ranks: np.ndarray,
    other: dict[str, np.ndarray],
    compare_metrics: list[str],
) -> dict[str, object]:
    """The paired comparison with the other run on the users both ranked."""
    common, ia, ib = np.intersect1d(users, other["users"], assume_unique=True, return_indices=True)
    if len(common) == 0:
        fail(f"{run.path} and {args.compare} have no evaluated users in common")
    n_boot = max(args.bootstrap, 1000)
    return {
        "other": args.compare,
        "n_common_users": len(common),
        "results": [
            paired_comparison(ranks[ia], other["ranks"][ib], m, n_boot=n_boot, seed=args.seed) for m in compare_metrics
        ],
    }


def print_metrics(
    title: str, ks: tuple[int, ...], metrics: dict[str, float], ci: dict[str, tuple[float, float]]
) -> None:
    """The metrics table on stderr: value ± half-width of its bootstrap interval (exact bounds in the JSON)."""

    def cell(name: str) -> str:
        half = f" ± {(ci[name][1] - ci[name][0]) / 2:.4f}" if name in ci else ""
        return f"{metrics[name]:.4f}{half}"

    table = Table(title=title, title_justify="left")
    for col in ("K", "HR", "NDCG", "MRR"):
        table.add_column(col, justify="right")
    for k in ks:
        table.add_row(str(k), cell(f"HR@{k}"), cell(f"NDCG@{k}"), cell(f"MRR@{k}"))
    table.add_row("all", "", "", cell("MRR"))
    console.print(table)


def print_comparison(run: RunDir, compare: str, comparison: dict[str, Any]) -> None:
    """The paired comparison on stderr, with what each run's training cost (from its summary.json)."""
    table = Table(
        title=f"this = {run.path}, other = {compare}: paired, {comparison['n_common_users']:,} common users",
        title_justify="left",
    )
    for col in ("metric", "this", "other", "diff", "relative", "95% CI of diff", "p"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in comparison["results"]:
        rel = f"{r['diff'] / r['mean_b']:+.1%}" if r["mean_b"] else "-"
        table.add_row(
            r["metric"],
            f"{r['mean_a']:.4f}",
            f"{r['mean_b']:.4f}",
            f"{r['diff']:+.4f}",
            rel,
            f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]",
            f"{r['p_value']:.3g}",
        )
    # What the difference cost: training time and tokens from each run's summary.json.
    other_run = RunDir(Path(compare) if Path(compare).is_dir() else Path(compare).parent)
    a, b = read_costs(run), read_costs(other_run)
    if a is not None and b is not None:
        for key, label, fmt in COSTS:
            ratio = f"{a[key] / b[key]:.2f}x" if b.get(key) else "-"
            table.add_row(label, fmt.format(a[key]), fmt.format(b[key]), "", ratio, "", "")
    console.print(table)


def write_ranks(path: Path, users: np.ndarray, ranks: np.ndarray, mine: dict[str, object], window: int) -> None:
    """The ranks file: each target's user and rank, with what a later --compare checks against
    (`mine`: split, filter_seen, n_items, data; see load_other) and the model's window."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, users=users, ranks=ranks, **mine, window=window)


def write_outputs(
    out: Path, result: dict[str, Any], users: np.ndarray, ranks: np.ndarray, mine: dict[str, object]
) -> None:
    """The ranks file, then the metrics JSON `out` (`result`), so that a metrics JSON exists only beside
    its own ranks: the one being replaced goes first, and a kill before the new one leaves no stale pair."""
    out.unlink(missing_ok=True)
    write_ranks(ranks_path(out), users, ranks, mine, result["window"])
    with atomic_write(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


def metrics_title(run: RunDir, split: str, n_users: int, n_items: int, filter_seen: bool, with_ci: bool) -> str:
    """The metrics table's title: which run and split, how many users and items, what was ranked."""
    title = f"{run.path.name}: {split}, {n_users:,} users, {n_items:,} items"
    return (
        title
        + (", seen items filtered" if filter_seen else ", seen items ranked")
        + (", ± 95% bootstrap CI" if with_ci else "")
    )


def main() -> None:
    args = p.parse_args()
    keep_freed_memory()
    ks, compare_metrics = read_settings(args)
    device = torch_device(args.device)

    # -- the run, its data and the run to compare with (every check before the work) -------
    run = find_run(args.run)
    out = output_path(args, run)
    data_dir = args.data if args.data is not None else config_data_dir(run)
    model, data, n_shards = load_run(run, data_dir, device)
    data_abs = str(Path(data_dir).resolve())
    # the rule that selected the weights, so that test metrics follow it
    rule = args.filter_seen if args.filter_seen is not None else run.config().filter_seen
    filter_seen = resolve_filter_seen(rule, data)  # a sharded dir: decided on its first shard
    mine = {"split": args.split, "filter_seen": filter_seen, "n_items": data.n_items, "data": data_abs}
    other = load_other(args, mine) if args.compare is not None else None

    # -- rank every target on the full catalogue ------------------------------------------
    t0 = time.perf_counter()
    users, ranks = rank_targets(model, data, data_dir, n_shards, args, device, filter_seen)
    seconds = time.perf_counter() - t0
    console.print(
        f"{args.split}: ranked {len(users):,} targets among {data.n_items:,} items in {seconds:.1f} s on {device}"
    )
    metrics = metrics_from_ranks(ranks, ks)
    ci = bootstrap_ci(ranks, ks, n_boot=args.bootstrap, seed=args.seed) if args.bootstrap > 0 else {}
    comparison = paired(args, run, users, ranks, other, compare_metrics) if other is not None else None

    # -- write ranks, then metrics: the metrics JSON exists only beside its own ranks ----------
    result = {
        "run": str(run.path.resolve()),
        "data": data_abs,
        "split": args.split,
        "filter_seen": filter_seen,
        "filter_seen_rule": rule,
        "window": model.cfg.max_len,
        "summary_events": model.cfg.summary_events if args.history_summary == "yes" else 0,
        "n_items": data.n_items,
        "sample_users": args.sample_users,
        "n_users": len(users),
        "ks": list(ks),
        "metrics": metrics,
        "ci": {k: list(v) for k, v in ci.items()},
        "bootstrap": {"n": args.bootstrap, "seed": args.seed, "alpha": 0.05},
        "ranks_file": ranks_path(out).name,
        "eval_seconds": round(seconds, 3),
        "device": str(device),
    }
    if comparison is not None:
        result["compare"] = comparison
    write_outputs(out, result, users, ranks, mine)

    # -- report (stderr) -----------------------------------------------------------------
    print_metrics(metrics_title(run, args.split, len(users), data.n_items, filter_seen, bool(ci)), ks, metrics, ci)
    if comparison is not None:
        print_comparison(run, args.compare, comparison)
    print_path(out)


if __name__ == "__main__":
    stage_main(main)
