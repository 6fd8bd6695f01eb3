"""Imported first by every stage script, before torch and polars load (seconds on a cold cache):
Ctrl-C or SIGTERM during that time ends the stage quietly, `interrupted` and exit 130, instead of
with a KeyboardInterrupt traceback from deep inside an import (SIGTERM: instead of vanishing with
no word). Later handlers (`cli.stage_main`, `cli.report_uncaught_errors`, train.py's
`cli.stop_requests`) take over from these; this module imports nothing heavy so that it is in place
within milliseconds."""

from __future__ import annotations

import os
import signal
import sys
from types import TracebackType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
# The signal frontier.py sends a stage it wants stopped: a request like the first Ctrl-C or SIGTERM,
# but never the second one that stops train.py at once (the stage may have had that signal already)
STOP = signal.SIGUSR1


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a stage the way Ctrl-C does: `finally` blocks clean up


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # runs after unwinding: every `finally` already ran
    sys.__excepthook__(kind, value, tb)


def quiet_interrupts() -> None:
    """Make an uncaught Ctrl-C, SIGTERM, and SIGUSR1 (how frontier.py asks its stages to stop: `STOP`)
    end the process with `interrupted` and exit 130."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(STOP, _terminate)
    sys.excepthook = _hook


quiet_interrupts()
