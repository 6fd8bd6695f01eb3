"""Helpers shared by the test files (import them by name: `from conftest import torchrun_train`)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torchrun_train(nproc: int = 2) -> list[str]:
    """The command that starts scripts/train.py as `nproc` processes on this machine (torch.distributed.run,
    one node); train.py's flags follow it."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(ROOT / "scripts" / "train.py"),
    ]
