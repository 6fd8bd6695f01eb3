"""Console entry points of the stages (`longrec-prep`, `longrec-train`, `longrec-eval`,
`longrec-recommend`, `longrec-frontier`, installed by `pip install 'longrec[train]'`) and
`python -m longrec_core STAGE ...`.

Each runs the stage's script file as `python scripts/STAGE.py` would: the scripts stay the one
place a stage is written. `longrec_core/stages` is a link to `scripts/`, so a wheel carries the
script files inside the package and a checkout finds them in place.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

STAGES = ("prep", "train", "eval", "recommend", "frontier")
SCRIPTS = Path(__file__).resolve().parent / "stages"


def run_stage(stage: str, argv: list[str] | None = None) -> None:
    """Run scripts/STAGE.py as __main__ with `argv` (default: this process's arguments)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    sys.argv = [f"longrec-{stage}", *(sys.argv[1:] if argv is None else argv)]
    runpy.run_path(str(SCRIPTS / f"{stage}.py"), run_name="__main__")


def prep() -> None:
    run_stage("prep")


def train() -> None:
    run_stage("train")


def eval() -> None:  # shadows the builtin inside this module only: the stage is called eval
    run_stage("eval")


def recommend() -> None:
    run_stage("recommend")


def frontier() -> None:
    run_stage("frontier")
