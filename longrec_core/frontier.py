"""The grid of scripts/frontier.py, the pieces tests check directly: its axes, grid files, cells
with collapsed axes and stable names, baselines, the flags that change only speed, and the line a
failed run is reported by. Pure Python: no torch, so the script's bad-input checks are quick.
Where a grid's runs live: longrec_core/griddir.py; what they show: longrec_core/report.py.

A cell is one training configuration; its name is deterministic and readable
(`sliding-w200-s64`, `last-w200`, `random-w50-maxhist1000-kshift`: regime, window, stride, and only
what differs from the defaults) and names the directory its runs live in, so a rerun of the same
grid finds its finished cells.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from longrec_core.choices import ITEM_EMBS, KS, REGIMES, TARGETS
from longrec_core.train_flags import add_train_flags, train_defaults

# The grid axes, their defaults (train.py's defaults, and the baseline against sliding) and the
# keys a grid file may hold besides them.
_TRAIN = train_defaults()
DEFAULTS: dict[str, str] = {
    "regimes": "last,sliding",
    "windows": str(_TRAIN["window"]),
    "strides": str(_TRAIN["stride"]),
    "max_history": "all" if _TRAIN["max_history"] is None else str(_TRAIN["max_history"]),
    "targets": _TRAIN["targets"],
    "item_emb": _TRAIN["item_emb"],
}
FILE_KEYS = (*DEFAULTS, "repeats", "metric", "baseline", "flags")
ALIASES = {
    "regime": "regimes",
    "window": "windows",
    "stride": "strides",
    "max_histories": "max_history",
    "item_embs": "item_emb",
}


# ----------------------------------------------------------------------------- axes and grid files
def _positive_int(axis: str, v: Any) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit())):
        raise ValueError(f"{axis} must be positive integers, got {v!r}")
    if int(v) < 1:
        raise ValueError(f"{axis} must be positive integers, got {v!r}")
    return int(v)


def _choice(axis: str, v: Any, choices: Sequence[str]) -> str:
    s = str(v).strip()
    if s not in choices:
        raise ValueError(f"unknown {axis} value {v!r}: expected one of {', '.join(choices)}")
    return s


def _history(axis: str, v: Any) -> int | None:
    """`all`, `none` (or JSON null) mean the whole history; else a positive event count."""
    if v is None or (isinstance(v, str) and v.strip().lower() in ("all", "none")):
        return None
    return _positive_int(axis, v)


def parse_axis(axis: str, raw: Any) -> list[Any]:
    """The values of one grid axis from a flag ("16,64"), or a grid file value (list or scalar),
    checked and de-duplicated in order. Raises ValueError with one sentence on a bad value."""
    items = raw.split(",") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
    items = [v for v in items if not (isinstance(v, str) and v.strip() == "")]
    if not items:
        raise ValueError(f"{axis} is empty: give at least one value")
    if axis == "regimes":
        values = [_choice("regime", v, REGIMES) for v in items]
    elif axis in ("windows", "strides"):
        values = [_positive_int(axis, v) for v in items]
    elif axis == "max_history":
        values = [_history(axis, v) for v in items]
    elif axis == "targets":
        values = [_choice("targets", v, TARGETS) for v in items]
    elif axis == "item_emb":
        values = [_choice("item-emb", v, ITEM_EMBS) for v in items]
    else:
        raise ValueError(f"unknown grid axis {axis!r}")
    return list(dict.fromkeys(values))


def load_grid(path: str | Path) -> dict[str, Any]:
    """A grid file (.toml or .json) as a dict of FILE_KEYS (singular axis names accepted).

    Example (TOML):  regimes = ["last", "sliding"]  strides = [16, 64]  windows = 200
                     max_history = ["all", 1000]  repeats = 3  flags = ["--epochs", "10"]
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {path} does not exist")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            raw = json.loads(path.read_text())
        else:
            raise ValueError(f"grid file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"grid file {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"grid file {path} must hold a table/object of grid keys")
    grid: dict[str, Any] = {}
    for key, value in raw.items():
        k = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if k not in FILE_KEYS:
            raise ValueError(f"grid file {path} has an unknown key {key!r}: expected {', '.join(FILE_KEYS)}")
        grid[k] = value
    if "flags" in grid and not (isinstance(grid["flags"], list) and all(isinstance(f, str) for f in grid["flags"])):
        raise ValueError(f'grid file {path}: flags must be a list of strings (train.py flags, e.g. ["--epochs", "10"])')
    return grid


# ----------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One training configuration; axes that do not matter for its regime are collapsed (None/"all")."""

    regime: str
    window: int
    stride: int | None  # None: the regime has no stride (last, random, session)
    max_history: int | None  # None: the whole training history
    targets: str = "all"
    item_emb: str = "full"

    @property
    def name(self) -> str:
        """regime-wWINDOW[-sSTRIDE][-maxhistH][-fresh][-ITEM_EMB]: only what differs from the defaults."""
        parts = [self.regime, f"w{self.window}"]
        if self.stride is not None:
            parts.append(f"s{self.stride}")
        if self.max_history is not None:
            parts.append(f"maxhist{self.max_history}")
        if self.targets != "all":
            parts.append(self.targets)
        if self.item_emb != "full":
            parts.append(self.item_emb)
        return "-".join(parts)

    def label(self, varying: Iterable[str] = ()) -> str:
        """A short plot label: regime/stride, plus the other axes named in `varying`."""
        parts = [self.regime] + ([f"s{self.stride}"] if self.stride is not None else [])
        if "windows" in varying:
            parts.append(f"w{self.window}")
        if "max_history" in varying and (self.regime != "last" or self.max_history is not None):
            parts.append("whole history" if self.max_history is None else f"maxhist{self.max_history}")
        if self.targets != "all":
            parts.append(self.targets)
        if self.item_emb != "full":
            parts.append(self.item_emb)
        return "/".join(parts)

    def train_args(self) -> list[str]:
        """The train.py flags that make this cell (data, out, seed and shared flags come on top)."""
        args = ["--regime", self.regime, "--window", str(self.window)]
        if self.stride is not None:
            args += ["--stride", str(self.stride)]
        if self.max_history is not None:
            args += ["--max-history", str(self.max_history)]
        return args + ["--targets", self.targets, "--item-emb", self.item_emb]


def make_cell(regime: str, window: int, stride: int, max_history: int | None, targets: str, item_emb: str) -> Cell:
    """The cell of one grid point with its irrelevant axes collapsed:
    - stride only matters where sliding windows are made (sliding, mixed);
    - `last` takes one window of window+1 events, so a max history of at least that is the whole history;
    - `fresh` targets equal `all` for `last` (one window per user) and do not exist for `random`
      (sampled windows have no order) or `session` (each target is in one window already; train.py
      refuses both pairs), so these keep every target."""
    if regime in ("last", "random", "session"):
        stride_ = None
    else:
        stride_ = stride
    if regime == "last" and max_history is not None and max_history >= window + 1:
        max_history = None
    if regime in ("last", "random", "session"):
        targets = "all"
    return Cell(regime, window, stride_, max_history, targets, item_emb)


def make_cells(
    regimes: Sequence[str],
    windows: Sequence[int],
    strides: Sequence[int],
    max_history: Sequence[int | None],
    targets: Sequence[str],
    item_emb: Sequence[str],
) -> list[Cell]:
    """Every cell of the product of the axes (regime outermost), collapsed and de-duplicated in order."""
    cells: dict[str, Cell] = {}
    for r in regimes:
        for w in windows:
            for s in strides:
                for h in max_history:
                    for t in targets:
                        for e in item_emb:
                            c = make_cell(r, w, s, h, t, e)
                            cells.setdefault(c.name, c)
    return list(cells.values())


def baseline_of(cell: Cell, cells: Sequence[Cell]) -> Cell | None:
    """The `last` cell a cell is compared with: the one with the same window, preferring the same
    item embedding and then the whole history (the classic truncation baseline); else the first
    `last` cell of the grid; None when the grid has none."""
    lasts = [c for c in cells if c.regime == "last"]
    same = sorted(
        (c for c in lasts if c.window == cell.window),  # stable: grid order among equals
        key=lambda c: (c.item_emb != cell.item_emb, c.max_history is not None),
    )
    return same[0] if same else lasts[0] if lasts else None


@dataclass
class Grid:
    """What a grid runs, checked before any run: its cells, seeds, metrics and shared train.py flags."""

    axes: dict[str, list[Any]]
    repeats: int
    metric: str  # the headline metric
    metrics: list[str]  # reported; the first is the headline
    shared: list[str]  # train.py flags for every run
    cells: list[Cell]
    baseline: str | None  # the cell every cell is compared with; None: each cell's `last` cell

    @property
    def shared_flags(self) -> set[str]:
        return {tok.split("=")[0] for tok in self.shared if tok.startswith("--")}


# Settings that change how fast a run trains or validates but not what it computes: a finished grid
# trained with other values of these is still the same grid (`--report-only` with --threads 2 over
# runs trained with --threads 1), and a stopped run resumes with new ones.
SPEED_ONLY_SETTINGS = ("threads", "eval_batch_size", "compile")


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises ValueError on a bad command line instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def what_it_trains(args: Sequence[str]) -> dict[str, Any] | None:
    """The train.py settings of command line `args`, by name, defaults filled in and the speed-only
    ones (SPEED_ONLY_SETTINGS) left out: two spellings of one run (`--lr 1e-3 --lr 2e-3` and
    `--lr 2e-3`; a flag left at its default or written out) give equal dicts. None when `args` does
    not parse with today's flags (a run recorded by another version)."""
    p = _RaisingParser(allow_abbrev=False, add_help=False)
    add_train_flags(p)
    try:
        settings, unknown = p.parse_known_args(list(args))
    except ValueError:
        return None
    if unknown:
        return None
    return {k: v for k, v in vars(settings).items() if k not in SPEED_ONLY_SETTINGS}


def trains_the_same(then: Sequence[str] | None, now: Sequence[str]) -> bool:
    """Whether recorded command line `then` trains what `now` does (see what_it_trains)."""
    if then is None:
        return False
    recorded = what_it_trains(then)
    return recorded is not None and recorded == what_it_trains(now)


# ----------------------------------------------------------------------------- metrics and logs
def metric_name(raw: str) -> str:
    """The eval.py metrics key of a metric name, case-insensitively; Recall@K is HR@K (one target
    per user). Raises ValueError unless eval.py reports it by default (HR/NDCG/MRR@K for K in
    KS, or MRR)."""
    kind, at, k = raw.strip().upper().partition("@")
    kind = "HR" if kind == "RECALL" else kind
    name = f"{kind}@{k}" if at else kind
    if name == "MRR" or (kind in ("HR", "NDCG", "MRR") and k.isdigit() and int(k) in KS):
        return name
    raise ValueError(
        f"unknown metric {raw!r}: expected NDCG@K, HR@K (= Recall@K), MRR@K for K in {', '.join(map(str, KS))}, or MRR"
    )


def failure_line(log: str) -> str:
    """What the last stage in a cell's stderr.log (after its `$ command` line) failed with: its last
    `error: ...` line; else the exception line of its traceback (a torch error's message runs over
    several lines, the last of which may be a lone quote); else its last line."""
    lines = log.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("$ ")]
    lines = [ln.rstrip() for ln in lines[starts[-1] + 1 if starts else 0 :] if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1]
    tracebacks = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last):")]
    if tracebacks:  # the frames below it are indented; the exception line is the first that is not
        return next((ln for ln in lines[tracebacks[-1] + 1 :] if not ln[0].isspace()), lines[-1])
    return lines[-1] if lines else ""
