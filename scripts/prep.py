"""Prepare an interaction log as a data dir; prints its path on stdout.

    python scripts/prep.py ../shared/data/ml-1m/ml-1m.txt.gz                    # -> data/ml-1m
    python scripts/prep.py ../shared/data/ml-latest-small/ratings.csv.gz \\
        --split temporal --valid-cutoff q0.8 --test-cutoff q0.9                 # -> data/ratings
    python scripts/prep.py events.csv.gz --dedupe --kcore --min-item-count 5 --min-user-len 5
    python scripts/prep.py log.parquet --user-col uid --item-col sku --time-col when --time-unit ms
    python scripts/prep.py sessions.txt --format items                          # one sequence per line
    python scripts/prep.py --synthetic --users 2000 --items 3000 --seed 0       # -> data/synthetic-u2000-i3000-s0
    python scripts/prep.py --synthetic --events 100000000 --out data/synth-1e8
    python scripts/prep.py ratings.dat | python scripts/train.py --stride 64
    python scripts/prep.py log.parquet --shards 16 --out data/big                # bounded memory, 10^9 events

Formats (--format; detected from the file name and first lines when absent), plain, .gz or .zst:
    retailrocket  events.csv: timestamp,visitorid,event,itemid,transactionid (ms); event -> types.npy
    ml-dat        MovieLens ratings.dat: UserID::MovieID::Rating::Timestamp
    ml-csv        MovieLens ratings.csv: userId,movieId,rating,timestamp
    inter         RecBole .inter: tab-separated, header like user_id:token item_id:token ... timestamp:float
    pairs         `user item` per line (SASRec), each user's lines in time order; an optional third
                  column is an integer time (--time-unit), which must not decrease within a user
    seqs          `user item item ...`, one user per line, items in time order
    items         `item item ...`, one sequence per line (the line number is the user)
    csv, parquet  any table, with --user-col --item-col --time-col [--type-col]
Ordered formats without times (pairs, seqs, items) get ts = the event's position in the file.

Then: drop rows with a missing user/item/time, optional dedupe and filters, items 1..N by
descending count, group by user in time order, sessions, split; see longrec_core.prepare.prepare.
"""

from __future__ import annotations

# First, before torch and polars load: Ctrl-C or SIGTERM while they do ends the stage quietly (exit 130).
import longrec_core.startup  # noqa: F401  # isort: skip

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

# Polars allocates through jemalloc, which by default keeps freed pages for 10 s; prep frees
# the whole raw table right before the NumPy stages, so have them returned promptly (this
# lowers peak RSS by about the raw table's size). Set before Polars loads; yours wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from rich.progress import Progress

from longrec_core import available_memory, cli, datadir, prepare, readers, shards, synthetic

# Peak memory of a synthetic prep, measured with /usr/bin/time: about 60 bytes per event of the
# data dir (of one shard with --shards; at 8e6 to 3e7 events) plus 20 bytes per catalogue item
# (19 between 10^6 and 8*10^6 items at 2*10^6 events).
SYNTH_EVENT_BYTES, SYNTH_ITEM_BYTES = 60, 20

# ---------------------------------------------------------------------------------------------
# settings
p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
g = p.add_argument_group("input")
g.add_argument(
    "input",
    nargs="?",
    help="log file (.gz/.zst read transparently); its path is read from stdin when piped (not the log itself); "
    "omit with --synthetic",
)
g.add_argument(
    "--format", choices=readers.FORMATS, default=None, help="input format (default: detect from name and first lines)"
)
g.add_argument("--user-col", default=None, help="csv/parquet: user column (default: a common name such as user_id)")
g.add_argument("--item-col", default=None, help="csv/parquet: item column (default: a common name such as item_id)")
g.add_argument(
    "--time-col",
    default=None,
    help="csv/parquet: time column, numbers or dates (default: a common name such as timestamp)",
)
g.add_argument("--type-col", default=None, help="csv/parquet: event type column, kept as types.npy (default: none)")
g.add_argument(
    "--time-unit",
    choices=tuple(readers.UNIT_DIV),
    default=None,
    help="unit of numeric times (default: s; ms for retailrocket)",
)
g.add_argument(
    "--separator",
    default=None,
    help="csv: field separator (default: tab if the header has tabs and no commas, else ',')",
)
g = p.add_argument_group("synthetic input (longrec_core.synthetic)")
g.add_argument("--synthetic", action="store_true", help="generate a log instead of reading one")
g.add_argument("--users", type=int, default=None, help="synthetic: users (default: 2000, or from --events)")
g.add_argument("--items", type=int, default=3000, help="synthetic: items (default: 3000)")
g.add_argument(
    "--events", type=int, default=None, help="synthetic: about this many events; sets --users (default: none)"
)
g.add_argument("--seed", type=int, default=0, help="synthetic: seed; same seed, same log (default: 0)")
g = p.add_argument_group("processing")
g.add_argument("--dedupe", action="store_true", help="drop exact repeats of (user, item, time, type) (default: off)")
g.add_argument(
    "--dedupe-consecutive",
    action="store_true",
    help="drop an event whose item equals the user's previous one (default: off)",
)
g.add_argument("--min-item-count", type=int, default=1, help="drop items with fewer events (default: 1)")
g.add_argument("--min-user-len", type=int, default=1, help="drop users with fewer events (default: 1)")
g.add_argument("--kcore", action="store_true", help="repeat both filters until nothing changes (default: off)")
g.add_argument(
    "--session-gap", type=int, default=1800, help="seconds of inactivity that start a new session (default: 1800)"
)
g.add_argument(
    "--split",
    choices=("loo", "temporal"),
    default="loo",
    help="loo: last event test, second last valid; temporal: global cutoffs (default: loo)",
)
g.add_argument(
    "--valid-cutoff", default=None, help="temporal: int seconds, ISO date (2015-08-01) or quantile of all times (q0.8)"
)
g.add_argument(
    "--test-cutoff", default=None, help="temporal: same forms; a user's first event at or after it is the test target"
)
g = p.add_argument_group("output")
g.add_argument(
    "--out", default=None, help="data dir to write (default: data/<input stem> or data/synthetic-u<U>-i<N>-s<S>)"
)
g.add_argument(
    "--force",
    action="store_true",
    help="replace an existing data dir (default: refuse); a dir holding anything else, or the input, is never replaced",
)
g.add_argument(
    "--shards",
    type=int,
    default=None,
    help="write N shards by user hash, streaming the input in batches so memory is bounded by one "
    "shard, not the log (integer ids; no --kcore or quantile cutoffs) (default: one data dir)",
)
g.add_argument(
    "--item-index",
    default=None,
    help="Parquet table (id, count) of the whole catalogue: index items by it instead of by this "
    "input's counts, so shards prepared on different machines share one index (default: none)",
)
g.add_argument(
    "--assemble",
    action="store_true",
    help="make --out a sharded dir from the data dirs inside it (each prepared with the same "
    "--item-index, which this also needs) (default: off)",
)
g.add_argument(
    "--batch-rows", type=int, default=20_000_000, help="--shards: input rows per batch (default: 20,000,000)"
)


# ---------------------------------------------------------------------------------------------
# checks made before any work


def check_shards(n: int) -> None:
    """--shards keeps a spill file per shard and column open: refuse more than the open-file limit allows."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per_shard = len(shards.SPILL_COLUMNS)
    most = (limit - 64) // per_shard  # 64: what else is open (the input, Polars, the console)
    if limit != resource.RLIM_INFINITY and n > most:
        raise ValueError(
            f"--shards {n:,} would keep {n * per_shard:,} files open, over this process's limit of "
            f"{limit:,} (ulimit -n): use at most {max(most, 0):,} shards or raise the limit"
        )


def check_synthetic_memory(cfg: synthetic.SyntheticConfig, n_shards: int) -> None:
    """Refuse a synthetic log too big for this machine's memory, rather than run for hours and then fail."""
    events = cfg.users * cfg.expected_len()
    need = events / n_shards * SYNTH_EVENT_BYTES + cfg.items * SYNTH_ITEM_BYTES
    have = available_memory()  # what is free now, not the machine's total
    if have is None:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ValueError(
            f"a synthetic log of {cfg.users:,} users (about {events:.3g} events) and {cfg.items:,} items "
            f"needs about {need / 2**30:,.0f} GiB of memory{'' if n_shards == 1 else ' per shard'}; "
            f"{have / 2**30:,.0f} GiB is available: ask for fewer --users/--events/--items or more --shards"
        )


def check_out(out: Path, force: bool, inputs: list[Path]) -> None:
    """Refuse an --out that cannot be made, or whose replacement (--force) would delete more than
    the old data dir: an input inside it, or any file a data dir does not hold."""
    cli.check_replaceable(out, force, datadir.MANIFEST)
    cli.check_parent_dir(out)
    if out.is_dir():  # with --force, a data dir or an empty dir (check_replaceable)
        for path in inputs:
            if path.resolve().is_relative_to(out.resolve()):
                raise ValueError(f"refusing to replace {out}: the input {path} is inside it")
        foreign = datadir.foreign_entries(out)
        if foreign:
            raise ValueError(
                f"refusing to replace {out}: it holds {foreign[0].relative_to(out)}, which is not part "
                "of a data dir (move it out first)"
            )


# ---------------------------------------------------------------------------------------------
# the steps


def checked_params(args: argparse.Namespace) -> prepare.PrepParams:
    """The processing flags as PrepParams, after every check that needs no input (bad -> exit 2)."""
    params = prepare.PrepParams(
        dedupe=args.dedupe,
        dedupe_consecutive=args.dedupe_consecutive,
        min_item_count=args.min_item_count,
        min_user_len=args.min_user_len,
        kcore=args.kcore,
        session_gap=args.session_gap,
        split=args.split,
        valid_cutoff=args.valid_cutoff,
        test_cutoff=args.test_cutoff,
    )  # checks the values: bad ones raise ValueError -> exit 2
    cli.check_int("--session-gap", args.session_gap, 1)
    for flag, cutoff in (("--valid-cutoff", args.valid_cutoff), ("--test-cutoff", args.test_cutoff)):
        if cutoff is not None:
            cli.check_int(flag, prepare.parse_cutoff(cutoff, None), -cli.INT64_MAX - 1)
    cli.check_int("--shards", args.shards, 1)
    if args.shards is not None:
        check_shards(args.shards)
    if args.item_index is not None and args.min_item_count > 1:
        raise ValueError(
            "--min-item-count cannot be combined with --item-index: drop rare items from the table instead"
        )
    cli.check_int("--batch-rows", args.batch_rows, 1)
    return params


def progress_log(bar: Progress, t0: float) -> prepare.Status:
    """A status callback: one timed log line on stderr per step, and the bar's description."""
    task = bar.add_task("starting", total=None)

    def status(msg: str) -> None:
        cli.console.print(f"{time.perf_counter() - t0:7.1f} s  {msg}", highlight=False, markup=False, soft_wrap=True)
        bar.update(task, description=msg)

    return status


def other_inputs(args: argparse.Namespace) -> list[Path]:
    """Files besides the log that prep reads (and so must not delete with --force)."""
    return [] if args.item_index is None else [Path(args.item_index)]


def assemble(args: argparse.Namespace, status: prepare.Status) -> Path:
    """--assemble: make --out a sharded dir from the data dirs inside it."""
    if args.out is None or args.item_index is None or args.input is not None:
        raise ValueError("--assemble needs --out DIR (holding the shard data dirs) and --item-index, and no input")
    out = Path(args.out)
    shards.assemble(out, args.item_index, status=status)
    return out


def synthetic_config(args: argparse.Namespace) -> synthetic.SyntheticConfig:
    """--synthetic: the generator's settings from the flags, checked."""
    if args.input is not None:
        raise ValueError("give an input file or --synthetic, not both")
    if args.users is not None and args.events is not None:
        raise ValueError("give --users or --events, not both")
    cli.check_int("--users", args.users, 1)
    cli.check_int("--events", args.events, 1)
    cli.check_int("--items", args.items, 2, 2**31 - 1)  # items.npy is int32
    cli.check_int("--seed", args.seed, 0, 2**64 - 1)  # the generator hashes it as a uint64
    users = args.users if args.events is None else synthetic.users_for_events(args.events, items=args.items)
    return synthetic.SyntheticConfig(users=2_000 if users is None else users, items=args.items, seed=args.seed)


def prep_synthetic(args: argparse.Namespace, params: prepare.PrepParams, status: prepare.Status) -> Path:
    """--synthetic: generate a log and prepare it, as one data dir or in --shards."""
    cfg = synthetic_config(args)
    check_synthetic_memory(cfg, args.shards or 1)
    out = Path(args.out or f"data/synthetic-u{cfg.users}-i{cfg.items}-s{cfg.seed}")
    if reuse(args, out, prepare.synthetic_source(cfg), params, status):
        return out
    check_out(out, args.force, other_inputs(args))
    if args.shards is None:
        prepare.prepare_synthetic(
            out, params, force=args.force, status=status, users=cfg.users, items=cfg.items, seed=cfg.seed
        )
    else:
        batches = ((u, i, t, None) for u, i, t in synthetic.chunks(cfg))
        shards.prepare_sharded(
            batches, out, params, args.shards, prepare.synthetic_source(cfg), force=args.force, status=status
        )
    return out


def input_file(args: argparse.Namespace) -> Path:
    """The log file: the argument, or a path piped on stdin; it must be an existing file."""
    path = cli.input_path(args.input, "input file")
    if not path.exists():
        raise ValueError(f"input file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"input {path} is not a file")
    return path


def describe_source(path: Path, fmt: str, info: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `source`: the file, its hash and size, and how it was read."""
    how = {
        k: v for k, v in info.items() if k not in ("type_order", "timed")
    }  # these two shape the read, not the source
    return {
        "path": str(path.resolve()),
        "sha256": datadir.file_sha256(path),
        "bytes": path.stat().st_size,
        "format": fmt,
        **how,
    }


def prep_file(args: argparse.Namespace, params: prepare.PrepParams, status: prepare.Status) -> Path:
    """Read the log file and prepare it, as one data dir (read whole) or in --shards (streamed)."""
    path = input_file(args)
    out = Path(args.out or f"data/{Path(readers.strip_compression(path.name)).stem or 'data'}")
    existing = out.exists() and not args.force  # refused below, unless it holds this input prepared the same way
    if not existing:
        check_out(out, args.force, [path, *other_inputs(args)])
    readers.check_compression(path)
    fmt = args.format or readers.detect_format(path)
    status(f"reading {path} ({fmt})")
    lf, info = readers.scan_log(
        path,
        fmt,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
        type_col=args.type_col,
        time_unit=args.time_unit,
        separator=args.separator,
    )
    status(f"hashing {path}")
    source = describe_source(path, fmt, info)
    if existing:
        if reuse(args, out, source, params, status):
            return out
        check_out(out, args.force, [path, *other_inputs(args)])
    if args.shards is None:
        log, read_counts = readers.read_log(lf, info, path, fmt, status=status)
        index = None if args.item_index is None else prepare.read_item_index(args.item_index, log.item_ids)
        prepare.prepare(log, out, params, {**source, **read_counts}, force=args.force, status=status, item_index=index)
    else:
        type_names: list[str] = []  # filled as the batches are read
        read_counts: dict[str, int] = {}
        batches = readers.event_batches(lf, info, path, fmt, args.batch_rows, type_names, read_counts)
        shards.prepare_sharded(
            batches,
            out,
            params,
            args.shards,
            source,
            type_names=type_names,
            type_order=info.get("type_order", []),
            read_counts=read_counts,
            force=args.force,
            status=status,
        )
    return out


def reuse(
    args: argparse.Namespace, out: Path, source: dict[str, Any], params: prepare.PrepParams, status: prepare.Status
) -> bool:
    """Whether `out` already holds this input prepared with these parameters (prepare.same_preparation),
    so that rerunning a pipe reuses it instead of refusing it; --force prepares it again, and an
    --item-index (a file that may have changed) always does."""
    if args.force or args.item_index is not None or not prepare.same_preparation(out, source, params, args.shards):
        return False
    status(f"{out} already holds this input prepared with these parameters: reusing it (--force prepares it again)")
    return True


def report(out: Path, sharded: bool, t0: float) -> None:
    """The summary table of what was written (stderr), a warning when its split leaves nothing to
    validate or test on, and its path (stdout)."""
    # the manifest, checked (a sharded dir: its root, each shard checked as it was written)
    manifest = datadir.read_manifest(out) if sharded else datadir.load_data_dir(out).manifest
    rows = prepare.summary_rows(manifest) + [("seconds", f"{time.perf_counter() - t0:,.1f}")]
    cli.print_table(f"data dir {out}", rows)
    warning = empty_split_warning(manifest["split"])
    if warning:
        sys.stderr.write(f"warning: {warning}\n")  # one line (the console would wrap it), and still exit 0
    cli.print_path(out)


def empty_split_warning(split: dict[str, Any]) -> str | None:
    """Why a data dir is of no use to train.py (no validation targets) or eval.py (no test
    targets), or None when its split has both."""
    missing = [name for name, key in (("validation", "valid_targets"), ("test", "test_targets")) if not split[key]]
    if not missing:
        return None
    why = (
        "leave-one-out holds out a user's last two events only when the user has 3 or more"
        if split["kind"] == "loo"
        else "no user has an event between the validation and test cutoffs with an earlier event before it"
    )
    who = "train.py will refuse it" if "validation" in missing else "eval.py will have nothing to rank"
    return f"the split leaves no {' and no '.join(missing)} targets ({why}): {who}"


# ---------------------------------------------------------------------------------------------
def main() -> None:
    args = p.parse_args()
    t0 = time.perf_counter()
    params = checked_params(args)
    with cli.progress() as bar:
        status = progress_log(bar, t0)
        if args.assemble:
            out = assemble(args, status)
        elif args.synthetic:
            out = prep_synthetic(args, params, status)
        else:
            out = prep_file(args, params, status)
    report(out, sharded=args.shards is not None or args.assemble, t0=t0)


if __name__ == "__main__":
    cli.stage_main(main)
