"""What every stage script shares: error exits, the input path, atomic output, stderr console.

Conventions (README.md, "The stages"): stdout carries only the path of what a stage
wrote; everything else (progress, logs, tables, errors) goes to stderr; bad input exits 2
with one sentence and leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import secrets
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from longrec_core import startup
from longrec_core.choices import DEVICES

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from rich.progress import Progress

_console: Console | None = None


def get_console() -> Console:
    """The rich console on stderr, made on first use (rich comes with the `train` extra; the
    torch-free modules that import this one work without it)."""
    global _console
    if _console is None:
        from rich.console import Console

        # never stdout: stdout is the pipe between stages. Logs and tables written to a file or pipe
        # get a wide fixed width instead of rich's 80 columns, so table cells are not cut.
        _console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    return _console


def __getattr__(name: str) -> Any:
    """`cli.console`: the stderr console (get_console), made when first asked for."""
    if name == "console":
        return get_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


EXIT_BAD_INPUT = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag like any other bad input: `error: ...`, exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)")


def add_scoring_flags(g: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags of a stage that scores the whole catalogue for batches of users (eval.py, recommend.py)."""
    g.add_argument("--batch-size", type=int, default=256, help="users scored at once (default: %(default)s)")
    g.add_argument(
        "--item-chunk",
        type=int,
        default=65536,
        help="items scored at once; memory ~ batch-size x item-chunk floats (default: %(default)s)",
    )
    g.add_argument(
        "--device", default="auto", choices=DEVICES, help="auto = cuda when available (default: %(default)s)"
    )


def fail(msg: str) -> NoReturn:
    """Print `error: msg` on stderr and exit 2 (bad input; no traceback)."""
    sys.stdout.flush()
    # Plain write, not console.print: a message may contain [brackets] that rich would eat.
    sys.stderr.write(f"error: {msg.rstrip()}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_BAD_INPUT)


def print_path(path: object) -> None:
    """Print the path of what a stage wrote: its one line on stdout. When the reader of a pipe has
    gone (the next stage failed or exited), the line is dropped and this stage still succeeds: its
    work is done and written, and its exit status should say so, not `[Errno 32] Broken pipe`."""
    try:
        print(path, flush=True)
    except BrokenPipeError:
        # stdout now points at /dev/null, so the interpreter's flush at exit does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


INT64_MAX = 2**63 - 1  # NumPy and the core take sizes, times and seeds as (u)int64


def check_int(flag: str, value: object, lo: int, hi: int = INT64_MAX) -> None:
    """Refuse (ValueError: one sentence, exit 2 under `stage_main`) an integer setting outside
    lo..hi, or one that is not an integer at all (a hand-edited config.json); None passes. Past
    int64, NumPy and the core would raise OverflowError; far past any real use, memory runs out."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{flag} must be an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{flag} must be >= {lo:,}, got {value:,}")
    if value > hi:
        raise ValueError(f"{flag} must be <= {hi:,}, got {value:,}")


def stdin_piped() -> bool:
    """True when stdin carries data from a pipe or a redirected file (`a.py | b.py`, `b.py < f`);
    False for a terminal and for /dev/null or a closed stdin (cron, CI), so stages fall back to
    their defaults there instead of reading an empty line."""
    if sys.stdin is None:
        return False
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):  # replaced by an in-memory stream
        return not sys.stdin.isatty()
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def input_path(arg: str | os.PathLike[str] | None, what: str) -> Path:
    """The input path: `arg` when given, else one line read from a piped stdin.

    `what` names the input in the error (e.g. "data dir"). When `arg` is None and stdin
    is a terminal (nothing piped), fails with exit 2.
    """
    if arg is not None and str(arg) != "":
        return Path(arg)
    if not stdin_piped():
        fail(f"no {what} given: pass it as an argument or pipe its path on stdin")
    line = sys.stdin.readline().strip()
    if not line:
        fail(f"no {what} given: stdin was empty (the previous stage may have failed)")
    return Path(line)


# A temporary sibling is named `.NAME.tmp-PID-HEX` (an output being written) or `.NAME.old-PID-HEX`
# (an old dir being replaced, kept until the new one is in place), PID being its writer's.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<tag>[0-9A-Za-z]+)$")


def _tmp_sibling(final: Path, kind: str = "tmp") -> Path:
    # Same parent, so the final os.replace/rename is atomic (no cross-device move).
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def temp_of(name: str) -> str | None:
    """The output a temporary sibling named `name` stands for (`.m.json.tmp-12-ab01cd23` -> `m.json`),
    or None when `name` is not one."""
    m = _TEMP_NAME.match(name)
    return m["name"] if m else None


def _writer_gone(pid: int) -> bool:
    """Whether the process that named a temporary file after its pid can no longer be writing it:
    it is gone, or it is this process (which has not made one yet: an earlier process had this pid,
    as every process does in a fresh container)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive under another user; or no such pid at all
        return False
    return False


def remove_stale_temps(final: str | os.PathLike[str]) -> list[Path]:
    """Clean up what killed writers of `final` left beside it: their temporary siblings
    (`.NAME.tmp-PID-HEX`, file or dir) are removed once their process is gone, and an old dir that
    a replacement renamed away (`.NAME.old-PID-HEX`) is renamed back when nothing took its place.
    Returns the paths removed or restored; temporaries of live processes are left alone."""
    final = Path(final)
    try:
        entries = list(final.parent.iterdir())
    except OSError:  # no parent yet, or unreadable: nothing to clean
        return []
    done = []
    for entry in sorted(entries):
        m = _TEMP_NAME.match(entry.name)
        if not m or m["name"] != final.name or not _writer_gone(int(m["pid"])):
            continue
        if m["kind"] == "old" and not os.path.lexists(final):
            os.rename(entry, final)  # the replacement was killed before the new dir went in
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(entry)
    return done


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot, and nothing was changed."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    ok = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return ok


def check_replaceable(final: str | os.PathLike[str], force: bool, marker: str | None = None) -> None:
    """Raise FileExistsError unless `final` is absent, or `force` is set and it may be replaced
    (see atomic_dir); stages call it before starting work so a refusal comes early."""
    final = Path(final)
    if not os.path.lexists(final):
        return
    if not force:
        raise FileExistsError(f"{final} already exists; pass --force to replace it")
    if not final.is_dir() or final.is_symlink():
        raise FileExistsError(f"refusing to replace {final}: it is not a directory")
    if marker is not None and not (final / marker).exists() and any(final.iterdir()):
        raise FileExistsError(f"refusing to replace {final}: it is not empty and has no {marker}")


def check_parent_dir(path: str | os.PathLike[str]) -> None:
    """Raise ValueError when `path` cannot be made because an existing ancestor is not a
    directory (`--out afile/run`); stages call it before any work."""
    path = Path(path)
    ancestor = next(a for a in path.absolute().parents if a.exists())
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {path}: {ancestor} is not a directory")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], force: bool = False, *, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling dir that is renamed to `final` when the block succeeds.

    On any exception (or Ctrl-C) the temporary dir is removed and `final` is untouched.
    An existing `final` is an error (FileExistsError, checked on entry, before any work)
    unless `force`; with `force` it is replaced only if it is a directory, and, when
    `marker` is given (e.g. "manifest.json"), only if it holds that file or is empty, so
    a mistyped --out never deletes an unrelated folder.
    """
    final = Path(final)
    remove_stale_temps(final)  # a killed earlier writer's leftovers (and a dir it had moved away)
    check_replaceable(final, force, marker)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        check_replaceable(final, force, marker)  # something may have appeared meanwhile
        if not os.path.lexists(final):
            os.rename(tmp, final)
        elif _exchange(tmp, final):  # one step: `final` is the old dir, then the new one
            shutil.rmtree(tmp, ignore_errors=True)  # now the old dir; a kill here leaves a stale temp
        else:  # two steps; a kill between them leaves `.NAME.old-...`, which the next writer puts back
            old = _tmp_sibling(final, "old")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file name next to `path`; os.replace it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # what a killed earlier writer of `path` left
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def one_sentence(e: BaseException) -> str:
    """An error as one line: `strerror: filename` for an OSError that names a file, else the
    first line of its message (or its type when it has none)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.strerror}: {e.filename}"
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _is_out_of_memory(e: BaseException) -> bool:
    # torch reports a failed allocation as a RuntimeError (OutOfMemoryError on CUDA); this module
    # does not import torch, so it recognizes them by name and message.
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))
    )


def _report(e: BaseException) -> int | None:
    """Say on stderr how a stage ends on the uncaught `e` and return its exit status, or None when
    `e` is a bug whose traceback is the report: Ctrl-C is `interrupted` (130); bad input
    (ValueError, OSError) and an output or model that cannot fit in memory are one sentence (2).
    LONGREC_DEBUG=1 makes every error a traceback."""
    if isinstance(e, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        return 130
    if os.environ.get("LONGREC_DEBUG"):
        return None
    if isinstance(e, (ValueError, OSError)) or _is_out_of_memory(e):  # FileNotFoundError is an OSError
        sys.stderr.write(f"error: {one_sentence(e)}\n")
        return EXIT_BAD_INPUT
    return None


def stage_main(fn: Callable[[], object]) -> None:
    """Run a stage's main(), ending on an uncaught error as `_report` says: one sentence and exit
    2 for bad input and for outputs that cannot fit (the core raises MemoryError for e.g. windows
    at stride 1 over a huge log), `interrupted` and 130 for Ctrl-C, a traceback for a bug.
    Set LONGREC_DEBUG=1 to get the traceback instead."""
    try:
        fn()
    except BaseException as e:
        if isinstance(e, SystemExit):
            raise
        sys.stdout.flush()
        status = _report(e)
        if status is None:
            raise
        raise SystemExit(status) from None


def report_uncaught_errors() -> None:
    """`stage_main`'s endings for a script that runs top to bottom instead of in a main()."""
    default_hook = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        sys.stdout.flush()
        status = _report(value)
        if status is None:
            default_hook(kind, value, tb)  # type: ignore[arg-type]
            return
        sys.stderr.flush()
        os._exit(status)  # the hook runs after unwinding: every `finally` and cleanup already ran

    sys.excepthook = hook


def stop_requests() -> Callable[[], str | None]:
    """Make the first Ctrl-C or SIGTERM a request to stop, which a long loop polls between steps
    so it can save its state and exit cleanly; a second one stops at once. `startup.STOP` (what
    frontier.py sends its stage when frontier.py itself is interrupted) is always a request only:
    the stage may already have the Ctrl-C that interrupted frontier.py. Returns the poll: the first
    signal's name once one has arrived, else None."""
    received: list[str] = []

    def request_stop(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if signum != startup.STOP:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM, startup.STOP):
        signal.signal(signum, request_stop)
    return lambda: received[0] if received else None


def progress(*, eta: bool = False, enabled: bool = True) -> Progress:
    """A rich progress bar on stderr: `with progress() as p: t = p.add_task("read", total=n)`.

    `eta` adds the estimated time left; `enabled=False` hides it (a process other than the main one
    under torchrun). It animates only on a terminal: logs carry the rest."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = get_console()
    columns = [
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=True, disable=not (enabled and console.is_terminal))


def torch_device(choice: str) -> torch.device:
    """The torch device of a --device choice (longrec_core.choices.DEVICES): auto = cuda when
    available; cuda when there is none is bad input (exit 2). torch is imported here, not at the
    top, so stages without torch stay quick."""
    import torch

    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        fail("--device cuda was asked for but no CUDA device is available")
    if choice not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {choice!r}")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and cuda) else "cpu")


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A two-column summary table (name, value) on stderr."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    get_console().print(table)


def keep_freed_memory() -> None:
    """Let glibc reuse freed blocks instead of returning them to the kernel (Linux; else a no-op).

    By default glibc serves every allocation over 128 KiB with a fresh mmap and unmaps it on free,
    so each training step page-faults its activations in again; on a 2-core CPU that was 40% of a
    SASRec step. Raising the mmap and trim thresholds keeps those pages in the heap for reuse.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)  # blocks up to 1 GiB come from the reusable heap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # keep up to 1 GiB of free heap rather than trimming it
    libc.mallopt(M_TOP_PAD, 64 << 20)  # grow the heap in 64 MiB steps
