"""A frontier grid's dir: the one owner of the layout scripts/frontier.py writes and the reports read.

    OUT/
      frontier.json, frontier.csv, frontier.png/.svg, curves.png/.svg   the grid's report (longrec_core.report)
      cells/CELL/                 one cell (a training configuration, named by longrec_core.frontier.Cell)
        seedK/                    its seed K
          cell.json               the run's record: cell, seed, status (running, ok, failed), train_args,
                                  wall_seconds, and for a failure its stage and error
          stderr.log              train.py's and eval.py's stderr, each after a `$ command` line
          lane.pid                the claim of the frontier.py process running it
          run/                    the run dir (longrec_core.rundir)

A grid begun when cell names said `h1000` for a max history (now `maxhist1000`) and `hall` for the
whole history of every regime but last keeps its cell dirs: they are found under their old names
(`GridDir.cell_dir`), so finished runs are not trained again and stopped ones resume.
"""

from __future__ import annotations

import atexit
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longrec_core import cli
from longrec_core.rundir import RunDir

CELLS, RECORD, STDERR, CLAIM, RUN = "cells", "cell.json", "stderr.log", "lane.pid", "run"
FRONTIER_JSON, FRONTIER_CSV = "frontier.json", "frontier.csv"


def other_spelling(name: str) -> str:
    """A cell name as the other naming writes it: `sliding-w200-s64` <-> `sliding-w200-s64-hall`
    (older grids named the whole history `hall` for every regime but last, and a max history `h1000`
    where the names now say `maxhist1000`)."""
    parts = name.split("-")
    if "hall" in parts or any(re.fullmatch(r"h\d+", p) for p in parts):  # old -> new
        return "-".join(f"maxhist{p[1:]}" if re.fullmatch(r"h\d+", p) else p for p in parts if p != "hall")
    if any(re.fullmatch(r"maxhist\d+", p) for p in parts):  # new -> old
        return "-".join(f"h{p[7:]}" if re.fullmatch(r"maxhist\d+", p) else p for p in parts)
    if parts[0] == "last":
        return name
    at = max(i for i, p in enumerate(parts) if re.fullmatch(r"[ws]\d+", p)) + 1
    return "-".join([*parts[:at], "hall", *parts[at:]])


@dataclass(frozen=True)
class SeedDir:
    """One seed of one cell: its record, its stages' stderr, its claim and its run dir."""

    path: Path

    @property
    def run(self) -> RunDir:
        return RunDir(self.path / RUN)

    @property
    def stderr_log(self) -> Path:
        return self.path / STDERR

    # -------------------------------------------------------------------------- cell.json
    def read_record(self) -> dict[str, Any] | None:
        """cell.json; None when it is missing or damaged (not JSON, or not an object)."""
        try:
            record = json.loads((self.path / RECORD).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_record(self, record: dict[str, Any]) -> None:
        with cli.atomic_write(self.path / RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=2))

    def recorded_args(self) -> list[str] | None:
        """The train.py flags cell.json records; None when it is missing or damaged."""
        args = (self.read_record() or {}).get("train_args")
        return args if isinstance(args, list) and all(isinstance(a, str) for a in args) else None

    # -------------------------------------------------------------------------- lane.pid
    def claim_holder(self) -> int | None:
        """The live process that holds this run's claim; None when nobody does (or its holder is gone)."""
        try:
            holder = int((self.path / CLAIM).read_text() or "0")
            if holder <= 0:  # empty or damaged (a pid of 0 would name this process group)
                return None
            os.kill(holder, 0)  # raises when no such process
        except (ValueError, OSError):
            return None
        return holder

    def claim(self) -> bool:
        """Take this run for this process, so that two frontier.py lanes on one grid never train the
        same run: False while another live process holds it; a claim left by a process that is gone
        is taken over. The claim goes when this process exits, or with `release`."""
        path = self.path / CLAIM
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.claim_holder()
                if holder is None:  # unreadable, or its process is gone: a stale claim
                    path.unlink(missing_ok=True)
                    continue
                return holder == os.getpid()
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            atexit.register(path.unlink, missing_ok=True)
            return True
        return False

    def release(self) -> None:
        (self.path / CLAIM).unlink(missing_ok=True)


@dataclass(frozen=True)
class GridDir:
    """A frontier grid's dir (OUT); see the module docstring for its layout."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def is_other_dir(self) -> bool:
        """Whether the dir holds something other than a grid (files, but no cells and no report)."""
        return (
            self.path.is_dir()
            and any(self.path.iterdir())
            and not (self.path / CELLS).is_dir()
            and not self.frontier_json.is_file()
        )

    def cell_dir(self, name: str) -> Path:
        """OUT/cells/NAME, the directory of a cell's runs; a grid begun under the other naming
        (`other_spelling`) keeps its directory."""
        here = self.path / CELLS / name
        other = self.path / CELLS / other_spelling(name)
        return other if not here.exists() and other.exists() else here

    def seed(self, cell: str, seed: int) -> SeedDir:
        return SeedDir(self.cell_dir(cell) / f"seed{seed}")

    def run(self, cell: str, seed: int = 0) -> RunDir:
        return self.seed(cell, seed).run

    def cell_names(self) -> list[str]:
        """The names of the cells that have a dir, sorted."""
        cells = self.path / CELLS
        return sorted(p.name for p in cells.glob("*")) if cells.is_dir() else []

    def evaluated_runs(self, cell: str) -> list[RunDir]:
        """The runs of a cell's seeds that eval.py has ranked the test targets of, in seed order."""
        seeds = sorted(self.cell_dir(cell).glob("seed*"), key=lambda d: int(d.name[4:]))
        return [run for run in (SeedDir(d).run for d in seeds) if run.ranks_path().is_file()]

    def logged_runs(self) -> list[RunDir]:
        """Every seed's run that has logged an epoch, of every cell."""
        runs = (SeedDir(d).run for d in self.path.glob(f"{CELLS}/*/seed*"))
        return [run for run in runs if run.log_path.is_file()]

    def stderr_logs(self) -> str:
        """Where the runs' stderr logs are, as a glob pattern to show."""
        return str(self.path / CELLS / "*" / "seed*" / STDERR)

    # -------------------------------------------------------------------------- the grid's report
    @property
    def frontier_json(self) -> Path:
        """Every cell's means, spreads, gains and costs (longrec_core.report.write_tables)."""
        return self.path / FRONTIER_JSON

    @property
    def frontier_csv(self) -> Path:
        """frontier.json's cells, one flat line each."""
        return self.path / FRONTIER_CSV

    def plot(self, name: str, fmt: str) -> Path:
        """A plot of the grid: `frontier` (test metrics against costs) or `curves` (best validation
        metric so far against training time), as png or svg."""
        return self.path / f"{name}.{fmt}"

    def read_frontier(self) -> dict[str, Any] | None:
        """frontier.json; None until frontier.py has written it."""
        return json.loads(self.frontier_json.read_text()) if self.frontier_json.is_file() else None
