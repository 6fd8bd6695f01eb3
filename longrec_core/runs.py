"""train.py's policy for its run dir: continue a stopped run (--resume) or start a new one, and the
checks on a dir that already exists. The dir's files and what a kill can leave in it:
longrec_core/rundir.py.

--resume continues from the run's ckpt.pt, or starts over from its config.json a run that stopped
before its first checkpoint (nothing in it can be continued); the same command again starts such a
run over too. eval.py evaluates only finished runs (`RunDir.finished`), and frontier.py resumes the
others. Every refusal is one sentence and exit 2 (`cli.fail`), before any training.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from longrec_core import cli
from longrec_core.rundir import Checkpoint, RunConfig, RunDir, RunDirError
from longrec_core.train_flags import check_settings

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

    run: RunDir
    data_path: Path
    ckpt: Checkpoint | None  # None: training starts at epoch 0 (a new run, or one started over)


def flag_given(name: str, argv: Sequence[str]) -> bool:
    """Whether the command line `argv` sets the flag of `name` (`max_steps` -> --max-steps)."""
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def started_settings(run: RunDir) -> RunConfig:
    """The settings of a run that stopped before its first checkpoint (its config.json), checked
    to be a run's and the dir to hold nothing else, so that starting it over loses nothing."""
    try:
        saved = run.read_config()
    except RunDirError as e:
        cli.fail(f"cannot resume: {e}")
    if saved.data is None:
        cli.fail(f"cannot resume: {run.config_path} is not a run's settings (no data dir in it)")
    foreign = run.foreign_files()
    if foreign:
        cli.fail(f"cannot resume: {run.path} holds {foreign[0]}, which is not part of a run dir")
    return saved


def resume(args: argparse.Namespace, argv: Sequence[str], log: Callable[[str], None]) -> RunStart:
    """Continue the run in `args.resume`: from its ckpt.pt, or over from its config.json when it
    stopped inside its first epoch. Its saved settings replace `args`' (in place), except the
    per-invocation flags and the run-length flags given again in `argv`; then they are checked."""
    run = RunDir(Path(args.resume))
    if args.data is not None or args.out is not None:  # the run's own, from its checkpoint
        cli.fail("--resume continues a run on its own data dir and in its own dir: drop --data and --out")
    ckpt = None
    if run.has_checkpoint():
        try:
            ckpt = run.read_checkpoint()
        except RunDirError as e:
            cli.fail(f"cannot resume: {e}")
        saved, threads = ckpt.config, ckpt.threads
    elif run.config_path.is_file():
        config = started_settings(run)
        saved, threads = config.settings, config.threads_used
        log(f"{run.path} has no checkpoint yet (it stopped inside its first epoch): starting it over with its settings")
    else:
        cli.fail(
            f"cannot resume: {run.path} has neither {run.checkpoint_path.name} nor {run.config_path.name}, "
            "so it is not a run dir"
        )
    for k in vars(args):
        if k in saved and k not in PER_INVOCATION_FLAGS and not (k in RUN_LENGTH_FLAGS and flag_given(k, argv)):
            setattr(args, k, saved[k])
    check_settings(args)  # the saved settings, which a hand-edited config.json may have broken
    resume_threads(args, argv, threads, log)
    return RunStart(run, Path(saved["data"]), ckpt)


def resume_threads(args: argparse.Namespace, argv: Sequence[str], used: int | None, log: Callable[[str], None]) -> None:
    """Set `args.threads` for a resumed run: the thread count it trained with, so that the reductions
    round as before and the weights come out bitwise those of an uninterrupted run; a --threads
    given again wins, with a warning when it differs."""
    if used is None:
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
    from longrec_core.datadir import MANIFEST  # here: readers of run dirs need no polars

    if not (demo / MANIFEST).exists() and make_demo:
        log(f"no --data given: making the demo data set in {demo} (prep.py --synthetic defaults)")
        from longrec_core.prepare import prepare_synthetic

        prepare_synthetic(demo)
    barrier()
    return demo


def new_run_dir(args: argparse.Namespace, *, check: bool) -> RunDir:
    """The dir of a new run: --out, else a fresh runs/STAMP-REGIME-sSTRIDE-seedSEED. With `check`
    (the main process), refuse a dir that holds a run or files that are not a run's."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) if args.out else Path("runs") / f"{stamp}-{args.regime}-s{args.stride}-seed{args.seed}"
    if path.exists() and not path.is_dir():
        cli.fail(f"--out {path} is a file, not a directory")
    cli.check_parent_dir(path)
    run = RunDir(path)
    if check and run.holds_run():
        cli.fail(f"run dir {path} already holds a run; pass another --out or --resume it")
    if check and path.is_dir() and run.foreign_files():
        cli.fail(f"--out {path} is a directory with other files in it, not a run dir; pass another --out")
    return run


def start(
    args: argparse.Namespace, demo: Path, *, main_process: bool, log: Callable[[str], None], barrier: Callable[[], None]
) -> RunStart:
    """A new run: its data dir (`data_path`), then its dir (`new_run_dir`, checked on the main process)."""
    data = data_path(args.data, demo, make_demo=main_process, log=log, barrier=barrier)
    return RunStart(new_run_dir(args, check=main_process), data, ckpt=None)
