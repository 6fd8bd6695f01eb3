"""The run dir's policy for train.py: continue a stopped run (--resume) or start a new one, the
checks on a dir that already exists, and config.json.

A run dir holds config.json and log.jsonl from its start, ckpt.pt from its first finished epoch
(or budget stop) and model.pt and summary.json later. A dir that holds no weights yet (a run that
failed or stopped in its first epoch) is started over; anything with weights is kept. Every
refusal is one sentence and exit 2 (`cli.fail`), before any training.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from longrec_core import cli
from longrec_core.data import prepare_synthetic
from longrec_core.train_flags import check_settings

RUN_START_FILES = ("config.json", "log.jsonl")  # all a run dir holds before its first checkpoint
RUN_FILES = ("ckpt.pt", "model.pt", "summary.json")  # a dir with any of these holds a run
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ckpt.pt written by train.py, on the CPU; exit 2 naming it when it is unreadable or foreign."""
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
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_START_FILES)
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
    return RunStart(run_dir, Path(saved["data"]), ckpt)


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
    if check and run_dir.is_dir() and any(p.name not in RUN_START_FILES for p in run_dir.iterdir()):
        cli.fail(f"--out {run_dir} is a directory with other files in it, not a run dir; pass another --out")
    return run_dir


def start(
    args: argparse.Namespace, demo: Path, *, main_process: bool, log: Callable[[str], None], barrier: Callable[[], None]
) -> RunStart:
    """A new run: its data dir (`data_path`), then its dir (`new_run_dir`, checked on the main process)."""
    data = data_path(args.data, demo, make_demo=main_process, log=log, barrier=barrier)
    return RunStart(new_run_dir(args, check=main_process), data, ckpt=None)


def write_config(run_dir: Path, config: dict[str, Any], *, fresh: bool) -> None:
    """Write the run's settings to config.json (atomically); a `fresh` start (no checkpoint) first
    drops the log.jsonl of an attempt that is started over."""
    if fresh:
        (run_dir / "log.jsonl").unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with cli.atomic_write(run_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2))
