"""The run dir: the one owner of the files train.py writes and every later stage reads.

    run = RunDir(Path("runs/demo/sliding"))
    run.config().filter_seen        # the seen-items rule the run validated with
    run.finished()                  # its Summary once training has ended, else None
    run.read_log()                  # the epoch records of log.jsonl, each epoch once

A run dir holds:
- config.json   train.py's settings (its flags, by name) and what it recorded beside them (RunConfig),
                from its start;
- log.jsonl     one record per validated epoch (a partial epoch too), appended;
- model.pt      the best weights so far ({"model": state_dict, "model_config": dict}), from its first
                validation;
- ckpt.pt       everything a resumed run needs (Checkpoint), from its first finished epoch (or
                budget stop);
- summary.json  what the run cost and how it stopped (Summary), once training has ended;
- metrics_SPLIT.json and metrics_SPLIT.ranks.npz   eval.py's default output (each evaluation
                rewrites them).
Every state a kill can leave is one of two kinds:
- no ckpt.pt: a run stopped (or killed) before its first checkpoint. Nothing in it can be
  continued, so it is started over; a model.pt written just before the kill goes with the rest.
- ckpt.pt: continued from the checkpoint. What was written after it is rewritten by the resumed
  run (training is deterministic for a thread count): log.jsonl is cut back to the lines the
  checkpoint had seen, and summary.json is dropped while the run trains again (`prepare`).
A run has finished when its summary.json says it stopped for a reason in FINISHED (not
`interrupted`). Whole files are written atomically (a temporary name, then a rename), and the
temporaries a killed write left (`.ckpt.pt.tmp-PID-HEX`) never make a dir foreign. No torch at
import: readers of run dirs (frontier.py, the results report) stay quick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from longrec_core import cli
from longrec_core.choices import FILTER_SEEN_CHOICES

CONFIG, LOG, MODEL, CHECKPOINT, SUMMARY = "config.json", "log.jsonl", "model.pt", "ckpt.pt", "summary.json"
START_FILES = (CONFIG, LOG, MODEL)  # what a run dir holds before its first checkpoint
RUN_FILES = (CHECKPOINT, SUMMARY)  # a dir with any of these holds a run
# A summary.json whose stop_reason is one of these ends a run that can be evaluated (interrupted: not yet).
FINISHED = ("epochs", "early_stopping", "max_train_seconds", "max_steps")
THREADS_KEY = "threads_used"  # config.json: the CPU threads the run computed with (its rounding depends on it)
# config.json keys that record the run beside its settings: the model it built, how many processes
# trained it, the threads they computed with, and the data dir's fingerprint (eval.py checks it)
RECORDED_KEYS = ("model", "world_size", THREADS_KEY, "data_fingerprint")


class RunDirError(ValueError):
    """A run dir's file that cannot be read as what train.py writes; its message is one clause
    naming the file, which the stage completes (`cannot resume: ...`, `...; pass --data`)."""


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


@dataclass(frozen=True)
class RunConfig:
    """config.json: the settings train.py ran with (`vars(args)`) and what it recorded beside them."""

    settings: dict[str, Any]
    model: dict[str, Any] | None = None  # ModelConfig.to_dict()
    world_size: int | None = None
    threads_used: int | None = None  # None: an older run that did not record it
    data_fingerprint: str | None = None  # None: an older run; eval.py then checks the item count only

    def to_json(self) -> dict[str, Any]:
        return {
            **self.settings,
            "model": self.model,
            "world_size": self.world_size,
            THREADS_KEY: self.threads_used,
            "data_fingerprint": self.data_fingerprint,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunConfig:
        model, fp = raw.get("model"), raw.get("data_fingerprint")
        return cls(
            {k: v for k, v in raw.items() if k not in RECORDED_KEYS},
            model=model if isinstance(model, dict) else None,
            world_size=_positive_int(raw.get("world_size")),
            threads_used=_positive_int(raw.get(THREADS_KEY)),
            data_fingerprint=fp if isinstance(fp, str) else None,
        )

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def data(self) -> str | None:
        """The data dir the run trained on (absolute since train.py resolves it); None when not named."""
        data = self.settings.get("data")
        return data if isinstance(data, str) and data else None

    @property
    def filter_seen(self) -> str:
        """The seen-items rule the run validated with (--filter-seen: auto, yes or no); "auto" when
        the file does not say."""
        rule = self.settings.get("filter_seen")
        return rule if isinstance(rule, str) and rule in FILTER_SEEN_CHOICES else "auto"


@dataclass(frozen=True)
class Summary:
    """summary.json: what a run cost and how it stopped; its figures by key (`summary["tokens"]`)."""

    raw: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    @property
    def stop_reason(self) -> str | None:
        reason = self.raw.get("stop_reason")
        return reason if isinstance(reason, str) else None

    @property
    def finished(self) -> bool:
        return self.stop_reason in FINISHED

    @property
    def best_epoch(self) -> int:
        """The best validation epoch counted from 1 (0: none validated); runs without `first_epoch`
        in their summary.json counted from 0."""
        return self.raw["best_epoch"] + 1 - self.raw.get("first_epoch", 0)

    @property
    def filter_seen(self) -> bool | None:
        """Whether validation ranked without the seen items (the rule resolved on the data)."""
        decided = self.raw.get("filter_seen")
        return decided if isinstance(decided, bool) else None


@dataclass
class Checkpoint:
    """ckpt.pt: everything a resumed run needs; `config` is its settings (`vars(args)`)."""

    model: dict[str, Any]  # state_dict
    model_config: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]  # torch, numpy, python, negatives, cuda
    state: dict[str, Any]  # train.py's loop state: epoch, batch, step, log_lines, ...
    config: dict[str, Any]
    threads: int | None = None  # its rounding depends on it: --resume restores it (None: older runs)
    data_fingerprint: str | None = None  # None: older runs
    averaged: dict[str, Any] | None = None  # the weight average's state (--ema-decay); None: not kept


OPTIONAL_CHECKPOINT_KEYS = ("threads", "data_fingerprint", "averaged")
REQUIRED_CHECKPOINT_KEYS = {f.name for f in fields(Checkpoint) if f.name not in OPTIONAL_CHECKPOINT_KEYS}


def _parse_record(line: str) -> dict[str, Any] | None:
    """One log.jsonl line as a record, or None when it is not one (a line cut short by a kill)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) else None


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file; None when it is missing or damaged (not JSON, or not an object)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def ranks_path(metrics_path: Path) -> Path:
    """Where the per-user ranks of a metrics JSON live: metrics_test.json -> metrics_test.ranks.npz."""
    return metrics_path.with_suffix(".ranks.npz")


def is_run_file(name: str) -> bool:
    """Whether a file named `name` belongs in a run dir: a run's file, or a temporary one of them."""
    name = cli.temp_of(name) or name
    return name in START_FILES or name in RUN_FILES


@dataclass(frozen=True)
class RunDir:
    """One training run's dir; see the module docstring for its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -------------------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    def metrics_path(self, split: str = "test") -> Path:
        """eval.py's default output for `split`."""
        return self.path / f"metrics_{split}.json"

    def ranks_path(self, split: str = "test") -> Path:
        return ranks_path(self.metrics_path(split))

    # -------------------------------------------------------------------------- the dir as a whole
    def holds_run(self) -> bool:
        """Whether a run has got past its start here (a checkpoint or a summary)."""
        return any((self.path / name).exists() for name in RUN_FILES)

    def foreign_files(self) -> list[str]:
        """The files here that are not a run's, sorted; the stale temporaries of killed writes are
        removed first."""
        for name in (*START_FILES, *RUN_FILES):
            cli.remove_stale_temps(self.path / name)
        return sorted(p.name for p in self.path.iterdir() if not is_run_file(p.name))

    def prepare(self, ckpt_state: dict[str, Any] | None) -> int:
        """Make the dir ready to train: a fresh start (`ckpt_state` None) drops what an attempt that
        is started over left (its log and weights); a resumed run drops its summary.json (it is
        training again, so not finished) and cuts log.jsonl back to what the checkpoint had seen
        (`truncate_log`). Returns the lines log.jsonl keeps."""
        if self.path.is_dir():
            self.foreign_files()  # removes the temporaries that killed writes of a run file left
        if ckpt_state is None:
            for path in (self.log_path, self.model_path):
                path.unlink(missing_ok=True)
        else:
            self.summary_path.unlink(missing_ok=True)
            self.truncate_log(ckpt_state)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return len(self.log_path.read_text().splitlines())
        except FileNotFoundError:
            return 0

    # -------------------------------------------------------------------------- config.json
    def write_config(self, config: RunConfig) -> None:
        with cli.atomic_write(self.config_path) as tmp:
            tmp.write_text(json.dumps(config.to_json(), indent=2))

    def read_config(self) -> RunConfig:
        """config.json; RunDirError (one clause naming it) when it is missing, unreadable or not an
        object of settings."""
        path = self.config_path
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunDirError(f"{self.path} has no {CONFIG}") from None
        except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
            raise RunDirError(f"{path} is not readable JSON ({type(e).__name__})") from None
        if not isinstance(raw, dict):
            raise RunDirError(f"{path} is damaged: it holds no JSON object of settings")
        return RunConfig.from_json(raw)

    def config(self) -> RunConfig:
        """config.json, or an empty one (no settings, nothing recorded) when it is missing or damaged."""
        try:
            return self.read_config()
        except RunDirError:
            return RunConfig({})

    # -------------------------------------------------------------------------- log.jsonl
    def append_log(self, record: dict[str, Any]) -> None:
        """One epoch's record (its `epoch` counted from 1), appended as a line."""
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict[str, Any]]:
        """The records of log.jsonl, each epoch once: a later record of an epoch (the rest of a partial
        epoch, or an epoch trained again after a kill) replaces the earlier one, so that summing a
        field over the records counts each epoch once. Lines that are not records are skipped."""
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return []
        by_epoch: dict[int, dict[str, Any]] = {}
        for rec in filter(None, map(_parse_record, lines)):
            by_epoch.pop(rec["epoch"], None)
            by_epoch[rec["epoch"]] = rec  # in the order the epochs were last logged
        return list(by_epoch.values())

    def truncate_log(self, ckpt_state: dict[str, Any]) -> None:
        """Cut log.jsonl back to the lines written before the checkpoint `ckpt_state` was saved, so
        that an epoch logged just before a kill, and logged again by the resumed run, appears once.

        The checkpoint counts its lines (`log_lines`); one that does not (older runs) keeps the
        records of the epochs before its own and, when it stopped inside its epoch, that epoch's
        partial record."""
        try:
            lines = self.log_path.read_text().splitlines()
        except FileNotFoundError:
            return
        keep = ckpt_state.get("log_lines")
        if not isinstance(keep, int):
            epoch, inside = ckpt_state.get("epoch", 0), ckpt_state.get("batch", 0) > 0
            keep = 0
            for line in lines:
                rec = _parse_record(line)
                if rec is None or not (
                    rec["epoch"] < epoch or (inside and rec["epoch"] == epoch and rec.get("partial"))
                ):
                    break
                keep += 1
        if keep >= len(lines) and all(_parse_record(line) is not None for line in lines):
            return
        with cli.atomic_write(self.log_path) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines[:keep]))

    # -------------------------------------------------------------------------- summary.json
    def write_summary(self, summary: dict[str, Any]) -> None:
        with cli.atomic_write(self.summary_path) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))

    def summary(self) -> Summary | None:
        """summary.json; None when it is missing or damaged."""
        raw = _read_object(self.summary_path)
        return None if raw is None else Summary(raw)

    def finished(self) -> Summary | None:
        """The summary of a run that has finished training (its stop_reason is in FINISHED), else None."""
        summary = self.summary()
        return summary if summary is not None and summary.finished else None

    def unfinished_reason(self) -> str | None:
        """Why this is not a finished run (one clause), or None when it is one."""
        if self.finished() is not None:
            return None
        if not self.summary_path.exists():
            return f"its training has not finished (no {SUMMARY})"
        summary = self.summary()
        if summary is None:
            return f"its {SUMMARY} is damaged"
        return f"its training stopped unfinished ({summary.get('stop_reason')})"

    # -------------------------------------------------------------------------- model.pt
    def has_model(self) -> bool:
        return self.model_path.is_file()

    def save_model(self, state_dict: dict[str, Any], model_config: dict[str, Any]) -> None:
        """The best weights so far, with the architecture that loads them."""
        import torch  # here, not at the top: readers of run dirs need no torch

        with cli.atomic_write(self.model_path) as tmp:
            torch.save({"model": state_dict, "model_config": model_config}, tmp)

    def read_weights(self) -> dict[str, Any]:
        """model.pt on the CPU: {"model": state_dict, "model_config": dict}; FileNotFoundError when absent."""
        import torch

        if not self.has_model():
            raise FileNotFoundError(f"no {MODEL} in {self.path} (not a finished run dir?)")
        weights: dict[str, Any] = torch.load(self.model_path, map_location="cpu", weights_only=True)
        return weights

    # -------------------------------------------------------------------------- ckpt.pt
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def save_checkpoint(self, ckpt: Checkpoint) -> None:
        import torch

        with cli.atomic_write(self.checkpoint_path) as tmp:
            torch.save({f.name: getattr(ckpt, f.name) for f in fields(ckpt)}, tmp)

    def read_checkpoint(self) -> Checkpoint:
        """ckpt.pt on the CPU; RunDirError naming it when it is unreadable or not train.py's."""
        import torch

        path = self.checkpoint_path
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            saved = blob["config"]
            missing = REQUIRED_CHECKPOINT_KEYS - set(blob)
        except Exception as e:  # truncated, not a torch file, or not one of ours
            raise RunDirError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
        if missing or not isinstance(saved, dict):
            raise RunDirError(f"{path} is not a checkpoint of train.py (it lacks {sorted(missing)})")
        threads, fp = blob.get("threads"), blob.get("data_fingerprint")
        known = {k: blob[k] for k in REQUIRED_CHECKPOINT_KEYS}
        averaged = blob.get("averaged")
        return Checkpoint(
            **known,
            threads=_positive_int(threads),
            data_fingerprint=fp if isinstance(fp, str) else None,
            averaged=averaged if isinstance(averaged, dict) else None,
        )

    # -------------------------------------------------------------------------- eval.py's output
    def read_metrics(self, split: str = "test") -> dict[str, Any] | None:
        """eval.py's metrics JSON of `split`; None when it is missing or damaged."""
        return _read_object(self.metrics_path(split))

    def metric_values(self, split: str = "test") -> dict[str, float] | None:
        """The metrics of an evaluated run (name -> value); None when it has none yet, or when its
        metrics JSON is damaged."""
        metrics = (self.read_metrics(split) or {}).get("metrics")
        ok = isinstance(metrics, dict) and all(isinstance(v, (int, float)) for v in metrics.values())
        return metrics if ok else None

    def read_ranks(self, split: str = "test") -> tuple[Any, Any] | None:
        """(users, ranks) of eval.py's ranks file of `split`; None when there is none."""
        import numpy as np

        path = self.ranks_path(split)
        if not path.is_file():
            return None
        with np.load(path) as z:
            return z["users"], z["ranks"]


def newest_run(root: Path, *, finished: bool) -> RunDir | None:
    """The run under `root` whose model.pt is the newest (only finished runs with `finished`)."""
    runs = [RunDir(f.parent) for f in root.glob(f"*/{MODEL}")]
    if finished:
        runs = [r for r in runs if r.finished() is not None]
    return max(runs, key=lambda r: r.model_path.stat().st_mtime, default=None)
