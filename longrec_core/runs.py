"""The run dir's policy for train.py: continue a stopped run (--resume) or start a new one, the
checks on a dir that already exists, and config.json.

A run dir holds config.json and log.jsonl from its start, model.pt (the best weights) from its
first validation, ckpt.pt from its first finished epoch (or budget stop), and summary.json once
training has ended. Every state a kill can leave is one of two kinds:
- no ckpt.pt: a run stopped (or killed) before its first checkpoint. Nothing in it can be
  continued, so it is started over, by `--resume` or by the same command again; a model.pt written
  just before the kill goes with the rest.
- ckpt.pt: continued by `--resume` from the checkpoint. What was written after it is rewritten by
  the resumed run (training is deterministic for a thread count): log.jsonl is cut back to the
  lines the checkpoint had seen, and summary.json is dropped while the run trains again.
A run has finished when its summary.json says it stopped for a reason in FINISHED (not
`interrupted`); eval.py evaluates only those, and frontier.py resumes the others. Temporary files
that a killed write left (`.ckpt.pt.tmp-PID-HEX`) never make a dir foreign. Every refusal is one sentence
and exit 2 (`cli.fail`), before any training.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longrec_core import cli
from longrec_core.train_flags import check_settings

RUN_START_FILES = ("config.json", "log.jsonl", "model.pt")  # what a run dir holds before its first checkpoint
RUN_FILES = ("ckpt.pt", "summary.json")  # a dir with any of these holds a run
# A summary.json whose stop_reason is one of these ends a run that can be evaluated (interrupted: not yet).
FINISHED = ("epochs", "early_stopping", "max_train_seconds", "max_steps")
CHECKPOINT_KEYS = {"model", "model_config", "optimizer", "scheduler", "rng", "state"}  # and "config"
# On --resume every setting comes from the checkpoint, except: these keep the checkpoint's value
# unless given again, and the per-invocation ones always come from this command line.
RUN_LENGTH_FLAGS = ("epochs", "patience")
PER_INVOCATION_FLAGS = (
    "resume",
    "max_train_seconds",
    "max_steps",
    "device",
    "precision",
    "threads",
    "compile",
    "config",
    "tensorboard",
)


@dataclass
class RunStart:
    """Where a training run writes, what it reads, and the checkpoint it continues from."""

    run_dir: Path
    data_path: Path
    ckpt: dict[str, Any] | None  # None: training starts at epoch 0 (a new run, or one started over)


def flag_given(name: str, argv: Sequence[str]) -> bool:
    """Whether the command line `argv` sets the flag of `name` (`max_steps` -> --max-steps)."""
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def run_file(name: str) -> bool:
    """Whether a file named `name` belongs in a run dir: a run's file, or a temporary one of them."""
    name = cli.temp_of(name) or name
    return name in RUN_START_FILES or name in RUN_FILES


def foreign_files(run_dir: Path) -> list[str]:
    """The files in `run_dir` that are not a run's, sorted; the stale temporaries of killed writes
    are removed first."""
    for name in (*RUN_START_FILES, *RUN_FILES):
        cli.remove_stale_temps(run_dir / name)
    return sorted(p.name for p in run_dir.iterdir() if not run_file(p.name))


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The summary.json of a run that has finished training (its stop_reason is in FINISHED), else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("stop_reason") in FINISHED else None


def unfinished_reason(run_dir: Path) -> str | None:
    """Why `run_dir` is not a finished run (one clause), or None when it is one."""
    if finished(run_dir) is not None:
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except FileNotFoundError:
        return "its training has not finished (no summary.json)"
    except (OSError, ValueError):
        return "its summary.json is damaged"
    stop = summary.get("stop_reason") if isinstance(summary, dict) else None
    return f"its training stopped unfinished ({stop})"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ckpt.pt written by train.py, on the CPU; exit 2 naming it when it is unreadable or foreign."""
    import torch  # here, not at the top: readers of run dirs (frontier.py) need no torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        saved = ckpt["config"]
        missing = CHECKPOINT_KEYS - set(ckpt)
    except Exception as e:  # truncated, not a torch file, or not one of ours
        cli.fail(f"cannot resume: {path} is not a readable checkpoint ({type(e).__name__})")
    if missing or not isinstance(saved, dict):
        cli.fail(f"cannot resume: {path} is not a checkpoint of train.py (it lacks {sorted(missing)})")
    return ckpt


def started_settings(run_dir: Path) -> dict[str, Any]:
    """The settings of a run that stopped before its first checkpoint (its config.json), checked
    to be a run's and the dir to hold nothing else, so that starting it over loses nothing."""
    path = run_dir / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        cli.fail(f"cannot resume: {path} is not readable ({type(e).__name__})")
    if not isinstance(saved, dict) or not isinstance(saved.get("data"), str):
        cli.fail(f"cannot resume: {path} is not a run's settings (no data dir in it)")
    foreign = foreign_files(run_dir)
    if foreign:
        cli.fail(f"cannot resume: {run_dir} holds {foreign[0]}, which is not part of a run dir")
    return saved


def resume(args: argparse.Namespace, argv: Sequence[str], log: Callable[[str], None]) -> RunStart:
    """Continue the run in `args.resume`: from its ckpt.pt, or over from its config.json when it
    stopped inside its first epoch. Its saved settings replace `args`' (in place), except the
    per-invocation flags and the run-length flags given again in `argv`; then they are checked."""
    run_dir = Path(args.resume)
    if args.data is not None or args.out is not None:  # the run's own, from its checkpoint
        cli.fail("--resume continues a run on its own data dir and in its own dir: drop --data and --out")
    ckpt = None
    if (run_dir / "ckpt.pt").is_file():
        ckpt = load_checkpoint(run_dir / "ckpt.pt")
        saved = ckpt["config"]
    elif (run_dir / "config.json").is_file():
        saved = started_settings(run_dir)
        log(f"{run_dir} has no checkpoint yet (it stopped inside its first epoch): starting it over with its settings")
    else:
        cli.fail(f"cannot resume: {run_dir} has neither ckpt.pt nor config.json, so it is not a run dir")
    for k in vars(args):
        if k in saved and k not in PER_INVOCATION_FLAGS and not (k in RUN_LENGTH_FLAGS and flag_given(k, argv)):
            setattr(args, k, saved[k])
    check_settings(args)  # the saved settings, which a hand-edited config.json may have broken
    resume_threads(args, argv, (ckpt or {}).get("threads", saved.get(THREADS_KEY)), log)
    return RunStart(run_dir, Path(saved["data"]), ckpt)


THREADS_KEY = "threads_used"  # config.json: the CPU threads the run computed with (its rounding depends on it)


def resume_threads(args: argparse.Namespace, argv: Sequence[str], used: object, log: Callable[[str], None]) -> None:
    """Set `args.threads` for a resumed run: the thread count it trained with, so that the reductions
    round as before and the weights come out bitwise those of an uninterrupted run; a --threads
    given again wins, with a warning when it differs."""
    if not isinstance(used, int) or isinstance(used, bool) or used < 1:
        if not flag_given("threads", argv):
            log("warning: this run does not record its thread count; for bitwise equal weights pass its --threads")
        return
    if not flag_given("threads", argv):
        args.threads = used
    elif args.threads != used:
        cli.console.print(
            f"warning: this run trained with {used} threads and resumes with --threads {args.threads}: its weights "
            f"will not be bitwise those of an uninterrupted run (drop --threads to resume with {used})",
            highlight=False,
            soft_wrap=True,
        )


def data_path(
    data: str | None, demo: Path, *, make_demo: bool, log: Callable[[str], None], barrier: Callable[[], None]
) -> Path:
    """The data dir of a new run: --data, else a path piped on stdin, else `demo`, which the main
    process (`make_demo`) prepares with prep.py's synthetic defaults on first use while the
    others wait at `barrier`."""
    if data is not None:
        return Path(data)
    if cli.stdin_piped():
        return cli.input_path(None, "data dir")
    if not (demo / "manifest.json").exists() and make_demo:
        log(f"no --data given: making the demo data set in {demo} (prep.py --synthetic defaults)")
        from longrec_core.prepare import prepare_synthetic  # here: readers of run dirs need no polars

        prepare_synthetic(demo)
    barrier()
    return demo


def new_run_dir(args: argparse.Namespace, *, check: bool) -> Path:
    """The dir of a new run: --out, else a fresh runs/STAMP-REGIME-sSTRIDE-seedSEED. With `check`
    (the main process), refuse a dir that holds a run or files that are not a run's."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) if args.out else Path("runs") / f"{stamp}-{args.regime}-s{args.stride}-seed{args.seed}"
    if run_dir.exists() and not run_dir.is_dir():
        cli.fail(f"--out {run_dir} is a file, not a directory")
    cli.check_parent_dir(run_dir)
    if check and any((run_dir / name).exists() for name in RUN_FILES):
        cli.fail(f"run dir {run_dir} already holds a run; pass another --out or --resume it")
    if check and run_dir.is_dir() and foreign_files(run_dir):
        cli.fail(f"--out {run_dir} is a directory with other files in it, not a run dir; pass another --out")
    return run_dir


def start(
    args: argparse.Namespace, demo: Path, *, main_process: bool, log: Callable[[str], None], barrier: Callable[[], None]
) -> RunStart:
    """A new run: its data dir (`data_path`), then its dir (`new_run_dir`, checked on the main process)."""
    data = data_path(args.data, demo, make_demo=main_process, log=log, barrier=barrier)
    return RunStart(new_run_dir(args, check=main_process), data, ckpt=None)


def write_config(run_dir: Path, config: dict[str, Any], *, ckpt_state: dict[str, Any] | None) -> int:
    """Make `run_dir` ready to train and write the run's settings to config.json (atomically).

    A fresh start (`ckpt_state` None) drops what an attempt that is started over left (its log and
    weights); a resumed run drops its summary.json (it is training again, so not finished) and
    cuts log.jsonl back to what the checkpoint had seen (`truncate_log`). Returns the lines log.jsonl
    keeps."""
    if run_dir.is_dir():
        foreign_files(run_dir)  # removes the temporaries that killed writes of a run file left
    if ckpt_state is None:
        for name in ("log.jsonl", "model.pt"):
            (run_dir / name).unlink(missing_ok=True)
    else:
        (run_dir / "summary.json").unlink(missing_ok=True)
        truncate_log(run_dir / "log.jsonl", ckpt_state)
    run_dir.mkdir(parents=True, exist_ok=True)
    with cli.atomic_write(run_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    try:
        return len((run_dir / "log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def truncate_log(path: Path, ckpt_state: dict[str, Any]) -> None:
    """Cut log.jsonl back to the lines written before the checkpoint `ckpt_state` was saved, so that
    an epoch logged just before a kill, and logged again by the resumed run, appears once.

    The checkpoint counts its lines (`log_lines`); one that does not (older runs) keeps the records
    of the epochs before its own and, when it stopped inside its epoch, that epoch's partial record."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return
    keep = ckpt_state.get("log_lines")
    if not isinstance(keep, int):
        epoch, inside = ckpt_state.get("epoch", 0), ckpt_state.get("batch", 0) > 0
        keep = 0
        for line in lines:
            rec = parse_record(line)
            if rec is None or not (rec["epoch"] < epoch or (inside and rec["epoch"] == epoch and rec.get("partial"))):
                break
            keep += 1
    if keep >= len(lines) and all(parse_record(line) is not None for line in lines):
        return
    with cli.atomic_write(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines[:keep]))


def parse_record(line: str) -> dict[str, Any] | None:
    """One log.jsonl line as a record, or None when it is not one (a line cut short by a kill)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) else None


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of log.jsonl, each epoch once: a later record of an epoch (the rest of a partial
    epoch, or an epoch trained again after a kill) replaces the earlier one, so that summing a field
    over the records counts each epoch once. Lines that are not records are skipped."""
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except OSError:
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for rec in filter(None, map(parse_record, lines)):
        by_epoch.pop(rec["epoch"], None)
        by_epoch[rec["epoch"]] = rec  # in the order the epochs were last logged
    return list(by_epoch.values())
