"""Recommend: a trained run -> the top-k items for each user's history, as raw item ids with scores.

    python scripts/recommend.py --run runs/demo/sliding          # every user of its data dir: what comes next
    python scripts/train.py --stride 64 | python scripts/recommend.py --users 7,12 --out recs.csv
    python scripts/recommend.py --run RUN --split test --out recs.jsonl   # the histories eval.py ranks test with
    echo "alice 17 4 230" | python scripts/recommend.py --run RUN --histories - --out recs.jsonl
    python scripts/recommend.py --run RUN --histories carts.csv -k 20 --out recs.parquet
    python scripts/recommend.py --run RUN --export model.pt2      # torch.export: padded histories -> scores

Histories: by default the users of the run's data dir (--data), each with its events up to
--split's end (all: every event, to recommend what comes next; valid or test: the events before
that target, the history eval.py ranks it with); or a file (or `-`, stdin) of raw item ids per user,
oldest first: `user item item ...` lines, a CSV with columns user and item (one event per row), or
JSONL {"user": ..., "items": [...]}. Raw item ids are those of the data dir's items.parquet; ids it
does not know are skipped with a count on stderr (all unknown: exit 2).

Every item of the catalogue is scored (in chunks of --item-chunk, users in batches of
--batch-size, so memory stays flat for 10^7 items); with seen items filtered (the rule the run
validated with, train.py --filter-seen; or --filter-seen here) the user's whole history is left out.
Writes (atomically) --out in the format of its suffix: .parquet or .csv, one row per recommendation
(user, rank, item, score); .jsonl, one line per user (user, items, scores), best first. stdout: the
output path, one line. Library call: longrec_core.recommend.Recommender.
"""

from __future__ import annotations

# First, before torch and polars load: Ctrl-C or SIGTERM while they do ends the stage quietly (exit 130).
import longrec_core.startup  # noqa: F401  # isort: skip

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from longrec_core import cli
from longrec_core.choices import FILTER_SEEN_CHOICES
from longrec_core.datadir import DataDir, load_data_dir, user_ids
from longrec_core.recommend import (
    Recommender,
    check_output_suffix,
    export_model,
    history_format,
    parse_histories,
    write_recommendations,
)
from longrec_core.rundir import RunDir, newest_run

HISTORY_ENDS = ("all", "valid", "test")

p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
g = p.add_argument_group("input")
g.add_argument(
    "--run",
    default=None,
    help="run dir written by train.py (default: read from stdin when piped, else the newest run under runs/)",
)
g.add_argument("--data", default=None, help="data dir (default: the run's config.json 'data')")
g.add_argument(
    "--histories",
    default=None,
    help="file of raw item ids per user (`user item item ...` lines, CSV user,item, or JSONL), `-` for stdin "
    "(then pass --run) (default: the data dir's users)",
)
g.add_argument(
    "--split",
    choices=HISTORY_ENDS,
    default="all",
    help="data dir users: all = every event of each user (recommend what comes next); valid / test = the "
    "events before that target, for the users that have one (default: all)",
)
g.add_argument("--users", default=None, help="data dir users: comma-separated raw user ids (default: every user)")
g = p.add_argument_group("recommendations")
g.add_argument("-k", "--k", type=int, default=10, help="items per user (default: %(default)s)")
g.add_argument(
    "--filter-seen",
    choices=FILTER_SEEN_CHOICES,
    default=None,
    help="leave the user's history out of the recommendations: yes, no, or auto (as train.py) (default: the "
    "rule the run validated with)",
)
cli.add_scoring_flags(g)
g = p.add_argument_group("output")
g.add_argument(
    "--out",
    default=None,
    help="recommendations file, .parquet, .csv or .jsonl (default: RUN/recommendations.parquet, rewritten each time)",
)
g.add_argument("--force", action="store_true", help="replace an existing --out (default: refuse)")
g.add_argument(
    "--export",
    default=None,
    help="write the model with torch.export to this .pt2 file instead (padded histories (B, max_len) of item "
    "indices -> scores (B, N+1); torch.export.load(PATH).module()); see longrec_core.recommend.export_model",
)


def find_run(arg: str | None, stdin_taken: bool) -> RunDir:
    """The run dir: --run, else a path piped on stdin (unless the histories come from it), else the
    run under runs/ with the newest weights."""
    if arg is None and (stdin_taken or not cli.stdin_piped()):
        newest = newest_run(Path("runs"), finished=False)
        if newest is None:
            cli.fail("no run given and no finished run under runs/; pass --run RUN_DIR")
        return newest
    run = RunDir(cli.input_path(arg, "run dir"))
    if not run.has_model():
        cli.fail(f"{run.path} has no {run.model_path.name} (not a run dir, or its training has not finished)")
    return run


def output_path(args: argparse.Namespace, run: RunDir, target: str | None) -> Path:
    """The file to write (--out or --export, else RUN/recommendations.parquet), checked before any work."""
    out = Path(target) if target is not None else run.path / "recommendations.parquet"
    if target is not None and not target.strip():
        cli.fail("--out is empty: give a file name, or leave --out out")
    if args.export is None:
        check_output_suffix(out)
    if out.is_dir():
        cli.fail(f"cannot write {out}: it is a directory")
    if target is not None and not args.force and os.path.lexists(out):
        cli.fail(f"{out} already exists; pass --force to replace it, or another path")
    cli.check_parent_dir(out)
    return out


def file_histories(rec: Recommender, source: str) -> tuple[list[str], list[np.ndarray]]:
    """(user labels, item indices per user) from --histories; unknown raw ids skipped with a count."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except UnicodeDecodeError:
        cli.fail(f"{source} is not a text file of histories")
    first = next((line for line in text.splitlines() if line.strip()), "")
    name = "stdin" if source == "-" else source
    users, raw = parse_histories(text, history_format(source, first), name)
    if not users:
        cli.fail(f"{name} holds no histories")
    if rec.model.cfg.n_types > 0:
        cli.fail(
            "the model was trained with event types, which histories from a file do not carry: "
            "recommend for the data dir's users instead (leave --histories out)"
        )
    index = rec.indices_of(raw)  # one join against the catalogue for every history
    unknown, total = sum(int((i == 0).sum()) for i in index), sum(len(i) for i in index)
    if total and unknown == total:
        cli.fail(
            f"none of the {total:,} item ids in {name} is in the catalogue of {rec.n_items:,} items "
            f"(items.parquet of the run's data dir)"
        )
    if unknown:
        cli.console.print(f"skipped {unknown:,} of {total:,} item ids not in the catalogue", highlight=False)
    keep = [u for u, i in enumerate(index) if (i > 0).any()]
    if len(keep) < len(users):
        cli.console.print(f"left out {len(users) - len(keep):,} users with no known item", highlight=False)
    return [users[u] for u in keep], [index[u][index[u] > 0] for u in keep]


def data_users(data: DataDir, data_path: str, split: str, users_arg: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(user indices, history end per user) of the data dir's users, each history [offsets[u], end)."""
    if split == "all":
        users = np.arange(data.n_users)
        end = data.offsets[1:][users]
    else:
        users, end = data.eval_targets(split)
    if users_arg is not None:
        raw = user_ids(data_path)
        wanted = [u.strip() for u in users_arg.split(",") if u.strip()]
        if not wanted:
            cli.fail("--users is empty: give comma-separated raw user ids")
        index = {str(r): i for i, r in enumerate(raw.to_list())}
        missing = [u for u in wanted if u not in index]
        if missing:
            cli.fail(f"user {missing[0]} is not in {data_path} (users.parquet)")
        pos = np.searchsorted(users, [index[u] for u in wanted])
        pos = np.minimum(pos, len(users) - 1)
        has = users[pos] == np.array([index[u] for u in wanted])
        if not has.all():
            cli.fail(f"user {wanted[int(np.flatnonzero(~has)[0])]} has no {split} target to recommend before")
        users, end = users[pos], end[pos]
    if len(users) == 0:
        cli.fail(f"no user of {data_path} has a {split} target")
    return users, end


def check_flags(args: argparse.Namespace) -> None:
    for flag, value in (("--k", args.k), ("--batch-size", args.batch_size), ("--item-chunk", args.item_chunk)):
        cli.check_int(flag, value, 1)
    if args.export is not None and (args.out is not None or args.histories is not None):
        cli.fail("--export writes the model only: drop --out and --histories")
    if args.histories is not None and args.users is not None:
        cli.fail("--users picks users of the data dir; with --histories the file names its users")


def recommend(
    args: argparse.Namespace, rec: Recommender, data_path: str
) -> tuple[list[Any], list[list[object]], list[list[float]]]:
    """(user labels, items per user, their scores), best first: for the users of --histories, else
    for the data dir's users (--users, or all with a --split target), in batches."""
    data = None
    if args.histories is not None:
        labels, histories = file_histories(rec, args.histories)
        users, end = None, None
    else:
        data = load_data_dir(data_path)
        users, end = data_users(data, data_path, args.split, args.users)
        labels = user_ids(data_path).gather(users).to_list()
    n = len(histories) if users is None else len(users)
    items_out: list[list[object]] = []
    scores_out: list[list[float]] = []
    with cli.progress(eta=True) as bar:
        task = bar.add_task(f"scoring {rec.n_items:,} items", total=n)
        for lo in range(0, n, args.batch_size):
            hi = min(lo + args.batch_size, n)
            types = None
            if users is None:
                batch = histories[lo:hi]
            else:
                u, e = users[lo:hi], end[lo:hi]
                batch = [data.items[data.offsets[a] : b] for a, b in zip(u, e)]
                if data.types is not None and rec.model.cfg.n_types > 0:
                    types = [data.types[data.offsets[a] : b] for a, b in zip(u, e)]
            idx, scores = rec.topk_indices(batch, args.k, types)
            for it, sc in zip(idx, scores):
                keep = it > 0
                items_out.append(rec.raw_ids(it[keep]))
                scores_out.append(sc[keep].tolist())
            bar.update(task, completed=hi)
    return labels, items_out, scores_out


def main() -> None:
    args = p.parse_args()
    check_flags(args)
    cli.keep_freed_memory()
    device = cli.torch_device(args.device)
    run = find_run(args.run, stdin_taken=args.histories == "-")
    out = output_path(args, run, args.export if args.export is not None else args.out)
    data_path = args.data if args.data is not None else run.config().data
    if data_path is None:
        cli.fail(f"{run.config_path} names no data dir; pass --data DATA_DIR")
    rec = Recommender.load(
        run.path, data=data_path, filter_seen=args.filter_seen, device=device, item_chunk=args.item_chunk
    )

    if args.export is not None:
        export_model(rec.model, out)
        cli.console.print(
            f"exported {run.path} with torch.export: items (B, {rec.window}) -> scores (B, {rec.n_items + 1:,})",
            highlight=False,
        )
        cli.print_path(out)
        return

    t0 = time.perf_counter()
    labels, items, scores = recommend(args, rec, data_path)
    write_recommendations(out, labels, items, scores)
    cli.console.print(
        f"recommended {args.k} items to each of {len(labels):,} users among {rec.n_items:,} items "
        f"({'seen items left out' if rec.filter_seen else 'seen items kept'}) in {time.perf_counter() - t0:.1f} s",
        highlight=False,
    )
    cli.print_path(out)


if __name__ == "__main__":
    cli.stage_main(main)
