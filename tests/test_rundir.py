"""The owners of the on-disk formats a run and a grid leave: longrec_core.rundir (config.json,
log.jsonl, ckpt.pt, summary.json) and longrec_core.griddir (cells, seeds, cell.json), on
hand-written files as older runs and killed writes leave them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec_core.griddir import GridDir
from longrec_core.rundir import Checkpoint, RunConfig, RunDir, RunDirError, Summary


def test_config_round_trip_keeps_settings_first_and_types_what_it_records(tmp_path: Path) -> None:
    config = RunConfig({"data": "/d", "filter_seen": "yes", "batch_size": 8}, {"dim": 8}, 1, 2, "fp")
    run = RunDir(tmp_path)
    run.write_config(config)
    raw = json.loads(run.config_path.read_text())
    assert list(raw) == ["data", "filter_seen", "batch_size", "model", "world_size", "threads_used", "data_fingerprint"]
    assert run.read_config() == config and run.config()["batch_size"] == 8
    older = RunConfig.from_json({"data": "", "filter_seen": "maybe", "threads_used": True, "data_fingerprint": 3})
    assert (older.data, older.filter_seen, older.threads_used, older.data_fingerprint) == (None, "auto", None, None)


@pytest.mark.parametrize(
    "text, message", [(None, r"has no config\.json"), ("{", "is not readable JSON"), ("[]", "holds no JSON object")]
)
def test_a_missing_or_damaged_config_is_one_clause_naming_it(tmp_path: Path, text: str | None, message: str) -> None:
    run = RunDir(tmp_path)
    if text is not None:
        run.config_path.write_text(text)
    with pytest.raises(RunDirError, match=message):
        run.read_config()
    assert run.config() == RunConfig({})  # the lenient reader: no settings


def test_finished_runs_and_why_others_are_not(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.finished() is None and "no summary.json" in (run.unfinished_reason() or "")
    run.summary_path.write_text("{")
    assert run.unfinished_reason() == "its summary.json is damaged"
    run.write_summary({"stop_reason": "interrupted", "best_epoch": 2})
    assert run.unfinished_reason() == "its training stopped unfinished (interrupted)"
    run.write_summary({"stop_reason": "early_stopping", "best_epoch": 2, "first_epoch": 1, "filter_seen": True})
    summary = run.finished()
    assert summary is not None and run.unfinished_reason() is None
    assert (summary.best_epoch, summary.filter_seen, summary["stop_reason"]) == (2, True, "early_stopping")
    assert Summary({"best_epoch": 2}).best_epoch == 3  # older runs counted epochs from 0


def test_log_reads_each_epoch_once_and_is_cut_back_to_the_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for rec in ({"epoch": 1, "loss": 3.0}, {"epoch": 2, "partial": True, "loss": 2.5}, {"epoch": 2, "loss": 2.0}):
        run.append_log(rec)
    with open(run.log_path, "a") as f:
        f.write('{"epoch": 3, "lo')  # a line cut short by a kill
    assert [r["loss"] for r in run.read_log()] == [3.0, 2.0]
    assert run.prepare({"log_lines": 2, "epoch": 1}) == 2  # resumed: the log keeps the checkpoint's lines
    assert [r["loss"] for r in run.read_log()] == [3.0, 2.5]
    # an older checkpoint (no log_lines; epochs counted from 0) saved inside epoch 1 keeps the records
    # before it and that epoch's partial one
    run.log_path.write_text("".join(json.dumps({"epoch": e, "partial": p}) + "\n" for e, p in ((0, 0), (1, 1), (1, 0))))
    run.truncate_log({"epoch": 1, "batch": 5})
    assert [(r["epoch"], r["partial"]) for r in run.read_log()] == [(0, 0), (1, 1)]


def test_checkpoint_round_trip_and_foreign_files_are_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    ckpt = Checkpoint({"w": torch.ones(2)}, {"dim": 8}, {}, {}, {}, {"epoch": 1}, {"data": "/d"}, threads=2)
    run.save_checkpoint(ckpt)
    back = run.read_checkpoint()
    assert back.state == {"epoch": 1} and back.threads == 2 and back.data_fingerprint is None
    assert torch.equal(back.model["w"], torch.ones(2))
    torch.save({"config": {}}, run.checkpoint_path)
    with pytest.raises(RunDirError, match=r"is not a checkpoint of train\.py"):
        run.read_checkpoint()
    run.checkpoint_path.write_bytes(b"junk")
    with pytest.raises(RunDirError, match="is not a readable checkpoint"):
        run.read_checkpoint()
    (tmp_path / ".ckpt.pt.tmp-999999999-ab").write_text("")  # a killed write's temporary: a run's file
    (tmp_path / "notes.txt").write_text("mine")
    assert run.foreign_files() == ["notes.txt"]


def test_grid_dir_finds_old_cell_names_and_seeds_in_numeric_order(tmp_path: Path) -> None:
    grid = GridDir(tmp_path)
    assert not grid.is_other_dir() and grid.cell_names() == [] and grid.read_frontier() is None
    for seed in (10, 2, 1):
        run = grid.run("sliding-w50-s50-hall", seed)
        run.path.mkdir(parents=True)
        if seed != 1:  # seed 1 not evaluated yet
            np.savez(run.ranks_path(), users=np.arange(3), ranks=np.ones(3, dtype=np.int64))
    assert grid.cell_dir("sliding-w50-s50") == tmp_path / "cells" / "sliding-w50-s50-hall"
    assert [r.path.parent.name for r in grid.evaluated_runs("sliding-w50-s50")] == ["seed2", "seed10"]
    seed = grid.seed("sliding-w50-s50", 2)
    seed.write_record({"status": "ok", "train_args": ["--epochs", "3"]})
    assert seed.recorded_args() == ["--epochs", "3"]
    assert seed.claim() and seed.claim_holder() is not None
    seed.release()
    assert seed.claim_holder() is None
