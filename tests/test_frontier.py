"""scripts/frontier.py: the grid (axes, grid files, collapsed cells, baselines), the Pareto
frontier on hand-made and random points against a plain reference, bad input before any run,
and a tiny grid end to end (a failing cell recorded while the grid goes on; a rerun skips
finished runs and refuses runs trained with other flags)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from longrec_core.frontier import (
    SPEED_ONLY_SETTINGS,
    Cell,
    baseline_of,
    failure_line,
    load_grid,
    make_cell,
    make_cells,
    metric_name,
    parse_axis,
    trains_the_same,
    what_it_trains,
)
from longrec_core.griddir import GridDir, other_spelling
from longrec_core.prepare import prepare_synthetic
from longrec_core.report import mean_sd, pareto_mask, time_unit, validation_curve
from longrec_core.rundir import RunDir
from longrec_core.train_flags import train_defaults

ROOT = Path(__file__).resolve().parents[1]
FRONTIER = [sys.executable, str(ROOT / "scripts" / "frontier.py")]
TINY = ["--windows", "20", "--strides", "8", "--epochs", "1", "--dim", "16", "--ffn", "32", "--threads", "1"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run(
        [*FRONTIER, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, cwd=ROOT, timeout=600
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("frontier") / "data"
    prepare_synthetic(path, users=60, items=80, seed=3)
    return path


# ----------------------------------------------------------------------------- Pareto
def test_validation_curve_is_the_best_so_far_against_cumulative_training_seconds(tmp_path: Path) -> None:
    log = [
        {"epoch": 0, "train_seconds": 10.0, "valid": {"NDCG@10": 0.10}},
        {"epoch": 1, "train_seconds": 12.0, "valid": {"NDCG@10": 0.15}},
        {"epoch": 2, "train_seconds": 11.0, "valid": {"NDCG@10": 0.12}},
        {"epoch": 3, "partial": True, "train_seconds": 5.0},  # stopped mid-epoch: no validation
        # resumed and finished: an epoch's record holds all its seconds so far (5 before the stop)
        {"epoch": 3, "train_seconds": 9.0, "valid": {"NDCG@10": 0.16}},
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + '\n{"epoch": 4, "tr')
    seconds, best = validation_curve(RunDir(tmp_path), "NDCG@10")
    assert seconds.tolist() == [10.0, 22.0, 33.0, 42.0]  # epoch 3 once, not 5 + 9
    assert best.tolist() == [0.10, 0.15, 0.15, 0.16]
    assert validation_curve(RunDir(tmp_path), "MRR") is None
    assert validation_curve(RunDir(tmp_path / "missing"), "NDCG@10") is None


def test_pareto_on_a_hand_made_set() -> None:
    cost = [1.0, 2.0, 3.0, 4.0, 2.0, 5.0, 3.0, 0.5]
    value = [0.1, 0.3, 0.2, 0.5, 0.3, 0.5, np.nan, np.nan]
    # (1, .1) cheapest real point; (2, .3) twice: equal points both stay; (3, .2) beaten by (2, .3);
    # (4, .5) best; (5, .5) same value at more cost; NaN points are never on it and beat nothing.
    expected = [True, True, False, True, True, False, False, False]
    assert pareto_mask(cost, value).tolist() == expected
    assert pareto_mask([], []).tolist() == []
    with pytest.raises(ValueError, match="one length"):
        pareto_mask([1.0, 2.0], [1.0])


def test_pareto_matches_a_plain_reference_on_random_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        c = rng.integers(0, 5, n).astype(float)  # few distinct values: many ties
        v = rng.integers(0, 5, n).astype(float)
        ref = [
            not any(c[j] <= c[i] and v[j] >= v[i] and (c[j] < c[i] or v[j] > v[i]) for j in range(n)) for i in range(n)
        ]
        assert pareto_mask(c, v).tolist() == ref
        # every point off the frontier is dominated by one on it
        on = pareto_mask(c, v)
        for i in np.flatnonzero(~on):
            assert any(c[j] <= c[i] and v[j] >= v[i] for j in np.flatnonzero(on))


def test_mean_sd() -> None:
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std (ddof=1)
    m, s = mean_sd([4.0])
    assert m == 4.0 and np.isnan(s)
    assert all(np.isnan(x) for x in mean_sd([]))


# ----------------------------------------------------------------------------- grid
def test_parse_axis_values_and_errors() -> None:
    assert parse_axis("strides", "16,64,16") == [16, 64]
    assert parse_axis("strides", [16, "64"]) == [16, 64]
    assert parse_axis("windows", 200) == [200]
    assert parse_axis("max_history", "all,1000") == [None, 1000]
    assert parse_axis("max_history", [None, "none", 5]) == [None, 5]
    assert parse_axis("regimes", " last, sliding") == ["last", "sliding"]
    with pytest.raises(ValueError, match="unknown regime value 'slide'"):
        parse_axis("regimes", "last,slide")
    with pytest.raises(ValueError, match="positive integers"):
        parse_axis("strides", "0")
    with pytest.raises(ValueError, match="positive integers"):
        parse_axis("windows", [True])
    with pytest.raises(ValueError, match="unknown targets"):
        parse_axis("targets", "some")
    with pytest.raises(ValueError, match="empty"):
        parse_axis("windows", ",")


def test_cells_collapse_irrelevant_axes_and_have_stable_names() -> None:
    cells = make_cells(["last", "sliding", "random"], [50], [16, 64], [None, 20, 100], ["all", "fresh"], ["full"])
    names = [c.name for c in cells]
    assert names[:3] == ["last-w50", "last-w50-maxhist20", "sliding-w50-s16"]  # last: no stride, no targets,
    assert "last-w50-maxhist100" not in names  # and a history of >= window+1 events is the whole history
    assert [n for n in names if n.startswith("random")] == [
        "random-w50",
        "random-w50-maxhist20",
        "random-w50-maxhist100",
    ]
    assert len([n for n in names if n.startswith("sliding")]) == 2 * 3 * 2
    assert "sliding-w50-s64-maxhist20-fresh" in names
    assert len(set(names)) == len(names)
    c = next(c for c in cells if c.name == "sliding-w50-s16-maxhist20-fresh")
    assert c.train_args() == [
        "--regime",
        "sliding",
        "--window",
        "50",
        "--stride",
        "16",
        "--max-history",
        "20",
        "--targets",
        "fresh",
        "--item-emb",
        "full",
    ]
    assert make_cell("last", 200, 64, None, "fresh", "kshift").train_args() == [
        "--regime",
        "last",
        "--window",
        "200",
        "--targets",
        "all",
        "--item-emb",
        "kshift",
    ]
    assert make_cell("mixed", 200, 64, None, "all", "kshift").name == "mixed-w200-s64-kshift"
    assert make_cell("session", 50, 64, None, "fresh", "full").train_args() == [  # no stride, each target once
        "--regime",
        "session",
        "--window",
        "50",
        "--targets",
        "all",
        "--item-emb",
        "full",
    ]
    assert make_cell("sliding", 200, 64, 1000, "all", "full").label({"windows"}) == "sliding/s64/w200"


def test_baseline_is_the_last_cell_with_the_same_window() -> None:
    cells = [
        Cell("last", 200, None, 20),
        Cell("last", 50, None, None),
        Cell("last", 200, None, None),
        Cell("last", 200, None, None, item_emb="kshift"),
        Cell("sliding", 200, 64, None),
        Cell("sliding", 200, 64, None, item_emb="kshift"),
        Cell("sliding", 100, 64, None),
    ]
    assert baseline_of(cells[4], cells).name == "last-w200"  # the whole history wins over h20
    assert baseline_of(cells[5], cells).name == "last-w200-kshift"  # same item embedding
    assert baseline_of(cells[6], cells).name == "last-w200-maxhist20"  # no w100: the first last cell
    assert baseline_of(cells[4], cells[4:]) is None


def test_grid_files_toml_and_json_agree_and_bad_ones_are_refused(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text(
        'regimes = ["last", "sliding"]\nstride = [16, 64]\nmax_history = ["all", 1000]\n'
        'repeats = 2\nflags = ["--epochs", "3"]\n'
    )
    (tmp_path / "g.json").write_text(
        json.dumps(
            {
                "regimes": ["last", "sliding"],
                "strides": [16, 64],
                "max-history": [None, 1000],
                "repeats": 2,
                "flags": ["--epochs", "3"],
            }
        )
    )
    a, b = load_grid(tmp_path / "g.toml"), load_grid(tmp_path / "g.json")
    assert parse_axis("max_history", a["max_history"]) == parse_axis("max_history", b["max_history"]) == [None, 1000]
    assert a["strides"] == b["strides"] == [16, 64] and a["flags"] == b["flags"] and a["repeats"] == 2
    (tmp_path / "bad.toml").write_text("regimes = [last\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_grid(tmp_path / "bad.toml")
    (tmp_path / "key.json").write_text('{"regimez": ["last"]}')
    with pytest.raises(ValueError, match="unknown key 'regimez'"):
        load_grid(tmp_path / "key.json")
    (tmp_path / "flags.json").write_text('{"flags": "--epochs 3"}')
    with pytest.raises(ValueError, match="list of strings"):
        load_grid(tmp_path / "flags.json")
    with pytest.raises(ValueError, match="does not exist"):
        load_grid(tmp_path / "none.toml")


def test_metric_names() -> None:
    assert metric_name("ndcg@10") == "NDCG@10"
    assert metric_name("Recall@20") == "HR@20"
    assert metric_name("mrr") == "MRR"
    for bad in ("NDCG@7", "AUC", "HR@", "NDCG@x"):
        with pytest.raises(ValueError, match="unknown metric"):
            metric_name(bad)


def test_failure_line_is_the_error_or_the_exception_of_the_last_stage() -> None:
    first = "$ python train.py --lr 1\nerror: an older attempt\n"
    assert (
        failure_line(first + "$ python train.py\nepoch 1\nerror: --lr must be >= 0\n\n") == "error: --lr must be >= 0"
    )
    # a torch error: the message runs over several lines, the last a lone quote
    torch_error = (
        '$ python train.py\nepoch 1\nTraceback (most recent call last):\n  File "train.py", line 3, in <module>\n'
        '    model(x)\n    ^^^^^^^^\nRuntimeError: shape mismatch in\n  "\n  x = y\n"\n'
    )
    assert failure_line(first + torch_error) == "RuntimeError: shape mismatch in"
    assert failure_line(first + "$ python eval.py\nKilled\n") == "Killed"
    assert failure_line(first + "$ python eval.py\n") == ""


# ----------------------------------------------------------------------------- bad input
def test_the_grid_and_train_flags_load_without_torch() -> None:
    """frontier.py checks a grid and the flags it passes to train.py before any run, and quickly."""
    code = (
        "import sys, longrec_core.frontier, longrec_core.train_flags, longrec_core.choices\n"
        "import longrec_core.griddir, longrec_core.rundir, longrec_core.report\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_train_flags_parse_as_train_py_does() -> None:
    from longrec_core.train_flags import train_defaults, train_parser

    defaults = train_defaults()
    assert defaults["window"] == 200 and defaults["regime"] == "sliding" and defaults["max_history"] is None
    args = train_parser().parse_args(["--loss", "sampled", "--sampler=popularity", "--compile"])
    assert (args.loss, args.sampler, args.compile) == ("sampled", "popularity", True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--regimes", "last,slide"], "unknown regime value 'slide'"),
        (["--metric", "AUC"], "unknown metric 'AUC'"),
        (["--strides", "0"], "positive integers"),
        (["--repeats", "0"], "--repeats must be a positive integer"),
        (["--grid", "GRID"], "not valid TOML"),
        (["--baseline", "last-w99"], "not a cell of this grid"),
        (["--seed", "3"], "--seed is set by frontier.py"),
        (["--data", "NODATA"], "is not a data dir"),
        (["--epohcs", "3"], "--epohcs is neither a frontier.py nor a train.py flag"),
        (["--loss", "bogus"], "argument --loss: invalid choice: 'bogus'"),  # train.py's choices, before any run
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
        (["--repeats", "1000000000000", "--data", "NODATA"], "more than 10,000 runs"),  # checked before the data
    ],
)
def test_bad_input_exits_2_with_one_sentence_before_any_run(
    data_dir: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "grid.toml").write_text("regimes = [last\n")
    argv = [a.replace("GRID", str(tmp_path / "grid.toml")).replace("NODATA", str(tmp_path / "nope")) for a in argv]
    out = tmp_path / "out"
    proc = run("--data", str(data_dir), "--out", str(out), *TINY, *argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert not out.exists()  # nothing ran, nothing written


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def grid(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """sliding and last, each with the whole history and with a history of 1 event: the latter
    leave no training window, so train.py exits 2 for them (first in grid order, then the grid goes on)."""
    out = tmp_path_factory.mktemp("grid") / "out"
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "sliding,last", "--max-history", "1,all", *TINY)
    return out, proc


def test_grid_runs_every_cell_and_records_the_failed_ones(grid: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = grid
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"
    report = json.loads((out / "frontier.json").read_text())
    cells = {c["name"]: c for c in report["cells"]}
    assert list(cells) == ["sliding-w20-s8-maxhist1", "sliding-w20-s8", "last-w20-maxhist1", "last-w20"]
    for name in ("sliding-w20-s8-maxhist1", "last-w20-maxhist1"):
        assert cells[name]["status"] == "failed"
        assert "no training windows" in cells[name]["error"]
        rec = json.loads((out / "cells" / name / "seed0" / "cell.json").read_text())
        assert rec["status"] == "failed" and rec["stage"] == "train"
    for name in ("sliding-w20-s8", "last-w20"):
        assert cells[name]["status"] == "ok"
    assert "2 of 4 cells failed" in proc.stderr


def test_grid_numbers_come_from_the_run_files(grid: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = grid
    report = json.loads((out / "frontier.json").read_text())
    cells = {c["name"]: c for c in report["cells"]}
    files = {}
    for name in ("sliding-w20-s8", "last-w20"):
        run_dir = out / "cells" / name / "seed0" / "run"
        summary = json.loads((run_dir / "summary.json").read_text())
        metrics = json.loads((run_dir / "metrics_test.json").read_text())["metrics"]
        files[name] = summary, metrics
        c = cells[name]
        assert c["mean"]["train_seconds"] == summary["train_seconds"] > 0
        assert c["mean"]["tokens"] == summary["tokens"] > 0
        assert c["peak_memory_bytes"] == summary["peak_memory_bytes"]
        for m in ("NDCG@10", "MRR", "HR@10"):
            assert c["mean"][m] == metrics[m]
            assert c["sd"][m] is None  # one seed: no spread
        assert c["baseline"] == "last-w20"  # the whole-history last cell, not last-w20-maxhist1
    (s_sum, s_met), (b_sum, b_met) = files["sliding-w20-s8"], files["last-w20"]
    s = cells["sliding-w20-s8"]
    assert s["gain"]["MRR"] == pytest.approx(s_met["MRR"] / b_met["MRR"] - 1)
    assert s["time_x"] == pytest.approx(s_sum["train_seconds"] / b_sum["train_seconds"])
    assert s["tokens_x"] == pytest.approx(s_sum["tokens"] / b_sum["tokens"])
    assert s_sum["tokens"] > b_sum["tokens"]  # sliding reads every event, last one window
    for cost, key in (("train_seconds", "train_seconds"), ("tokens", "tokens")):
        ok = [cells[n] for n in ("sliding-w20-s8", "last-w20")]
        mask = pareto_mask([c["mean"][key] for c in ok], [c["mean"]["NDCG@10"] for c in ok])
        assert [c[f"pareto_{cost}"] for c in ok] == mask.tolist()
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    assert [r["name"] for r in rows] == list(cells)
    assert float(rows[1]["NDCG@10"]) == pytest.approx(s_met["NDCG@10"])
    assert rows[0]["status"] == "failed" and rows[0]["NDCG@10"] == ""
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "frontier.svg").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_runs_and_refuses_other_flags(
    data_dir: Path, grid: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    out, _ = grid
    metrics = sorted(out.glob("cells/*/seed0/run/metrics_test.json"))
    assert len(metrics) == 2
    before = [m.stat().st_mtime_ns for m in metrics]
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "sliding,last", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 finished runs, 0 to run" in proc.stderr
    assert [m.stat().st_mtime_ns for m in metrics] == before
    assert [r["name"] for r in csv.DictReader((out / "frontier.csv").open())] == ["sliding-w20-s8", "last-w20"]
    # the same cells with another passthrough flag would mix two experiments in one table
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "sliding,last", *TINY, "--dropout", "0.1")
    assert proc.returncode == 2 and "was trained with other flags" in proc.stderr
    assert [m.stat().st_mtime_ns for m in metrics] == before


def test_report_only_trains_nothing_and_reports_the_finished_runs(
    data_dir: Path, grid: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """--report-only writes the tables and plots of a grid that is still training: with a second
    seed nobody has run, every cell is unfinished and nothing trains; with --repeats 1 the finished
    seed 0 of each cell is the report. A dir without a finished run has nothing to report (exit 2)."""
    out, _ = grid
    argv = ["--data", str(data_dir), "--out", str(out), "--regimes", "sliding,last", *TINY, "--report-only"]
    runs = sorted(out.glob("cells/*/seed*/run/summary.json"))
    before = [r.stat().st_mtime_ns for r in runs]
    proc = run(*argv, "--repeats", "2")
    assert proc.returncode == 0, proc.stderr
    assert "2 finished runs, reporting them" in proc.stderr
    assert "2 of 2 cells have runs not trained yet" in proc.stderr
    assert not list(out.glob("cells/*/seed1"))  # nothing claimed, nothing trained
    assert [r["status"] for r in csv.DictReader((out / "frontier.csv").open())] == ["unfinished", "unfinished"]
    proc = run(*argv, "--repeats", "1")
    assert proc.returncode == 0 and proc.stdout == f"{out}\n", proc.stderr
    assert [r["status"] for r in csv.DictReader((out / "frontier.csv").open())] == ["ok", "ok"]
    assert [r.stat().st_mtime_ns for r in sorted(out.glob("cells/*/seed*/run/summary.json"))] == before
    empty = tmp_path / "empty"
    proc = run("--data", str(data_dir), "--out", str(empty), "--regimes", "last", *TINY, "--report-only")
    assert proc.returncode == 2 and "holds no finished run of this grid" in proc.stderr, proc.stderr
    assert not empty.exists()


def test_a_grid_whose_every_cell_failed_exits_1(data_dir: Path, tmp_path: Path) -> None:
    """A history of 1 event leaves no training window in any cell: each fails on its own, and a grid
    with nothing but failures exits 1 pointing at the logs."""
    out = tmp_path / "out"
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "last,sliding", "--max-history", "1", *TINY)
    assert proc.returncode == 1, proc.stderr
    assert "every cell failed; see" in proc.stderr and proc.stdout == ""


def test_a_bad_passed_through_flag_stops_the_grid_at_the_first_cell(data_dir: Path, tmp_path: Path) -> None:
    """train.py refuses --lr -1 naming it, so every cell would fail: the grid stops with that sentence."""
    out = tmp_path / "out"
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "last,sliding", *TINY, "--lr", "-1")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --lr must be") and "cell last-w20 seed0" in last, proc.stderr
    assert [d.name for d in (out / "cells").iterdir()] == ["last-w20"]  # the second cell never ran
    assert json.loads((out / "cells" / "last-w20" / "seed0" / "cell.json").read_text())["status"] == "failed"
    assert not (out / "frontier.csv").exists() and not (out / "frontier.json").exists()


def test_damaged_cell_files_count_as_unfinished_or_unrecorded(data_dir: Path, tmp_path: Path) -> None:
    """A cell.json that is not an object is like a missing one (the finished run is kept); a
    metrics_test.json without a metrics object leaves the run unfinished, so it is evaluated again."""
    out = tmp_path / "out"
    argv = ["--data", str(data_dir), "--out", str(out), "--regimes", "last", *TINY]
    assert run(*argv).returncode == 0
    seed0 = out / "cells" / "last-w20" / "seed0"
    metrics_file, summary = seed0 / "run" / "metrics_test.json", seed0 / "run" / "summary.json"
    trained = summary.stat().st_mtime_ns
    good = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**good, "metrics": [1, 2]}))
    proc = run(*argv)
    assert proc.returncode == 0 and "skipped 0 finished runs, 1 to run" in proc.stderr, proc.stderr
    assert json.loads(metrics_file.read_text())["metrics"] == good["metrics"]  # evaluated again,
    assert summary.stat().st_mtime_ns == trained  # not trained again (cell.json records its flags)
    (seed0 / "cell.json").write_text("[]")
    proc = run(*argv)
    assert proc.returncode == 0 and "skipped 1 finished runs, 0 to run" in proc.stderr, proc.stderr


def test_a_run_another_lane_holds_is_not_a_failure(data_dir: Path, tmp_path: Path) -> None:
    """Two lanes on one grid: a run claimed by another live frontier.py is skipped, reported as being
    trained elsewhere, and does not fail the grid (a lane script with `set -e` goes on to its next grid)."""
    out = tmp_path / "out"
    seed0 = out / "cells" / "last-w20" / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / "lane.pid").write_text(str(os.getpid()))  # this live process stands for the other lane
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "last", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "another frontier.py is running it" in proc.stderr
    assert "1 of 1 cells are being trained by another frontier.py" in proc.stderr
    assert not (seed0 / "run").exists()  # nothing trained here
    assert [r["status"] for r in csv.DictReader((out / "frontier.csv").open())] == ["elsewhere"]
    (seed0 / "lane.pid").write_text("0")  # a claim whose holder is gone is taken over
    assert run("--data", str(data_dir), "--out", str(out), "--regimes", "last", *TINY).returncode == 0
    assert (seed0 / "run" / "metrics_test.json").is_file()


def test_runs_go_seed_major(data_dir: Path, tmp_path: Path) -> None:
    """Every cell's seed 0 comes before any seed 1, so a grid stopped part-way compares every cell
    (here another live lane holds every run, so the order is all that happens)."""
    out = tmp_path / "out"
    cells = ["last-w20", "sliding-w20-s8"]
    for cell in cells:
        for seed in (0, 1):
            d = out / "cells" / cell / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "lane.pid").write_text(str(os.getpid()))
    proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "last,sliding", "--repeats", "2", *TINY)
    assert proc.returncode == 0, proc.stderr
    order = re.findall(r"run \d/4 (\S+) (seed\d): another frontier.py is running it", proc.stderr)
    assert order == [(c, s) for s in ("seed0", "seed1") for c in cells], proc.stderr


@pytest.mark.parametrize("how", ["SIGTERM to frontier.py alone", "Ctrl-C to the process group"])
def test_an_interrupted_grid_checkpoints_its_run_and_resumes_it(data_dir: Path, tmp_path: Path, how: str) -> None:
    """Stopping frontier.py stops its train.py the way stopping train.py does (a checkpoint after the
    current step), whether the signal reached frontier.py alone or its whole process group (where
    train.py has it twice: the group's and frontier.py's); no further run starts, and a rerun resumes."""
    out = tmp_path / "out"
    args = [*FRONTIER, "--data", str(data_dir), "--out", str(out), "--regimes", "sliding", "--repeats", "2"]
    args += [*TINY[:4], "--epochs", "12", "--patience", "0", *TINY[6:]]
    seed0, seed1 = (out / "cells" / "sliding-w20-s8" / f"seed{k}" for k in (0, 1))
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job has
    )
    deadline = time.monotonic() + 120
    while not ((seed0 / "stderr.log").is_file() and "epoch 2:" in (seed0 / "stderr.log").read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "train.py never reached its second epoch"
        time.sleep(0.05)
    if how == "SIGTERM to frontier.py alone":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and stderr.rstrip().endswith("interrupted"), stderr
    assert "(interrupted); continue with --resume" in (seed0 / "stderr.log").read_text()
    assert RunDir(seed0 / "run").has_checkpoint() and RunDir(seed0 / "run").finished() is None
    assert not seed1.exists()  # nothing started after the stop
    rerun = subprocess.run(args, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    epochs = [json.loads(line)["epoch"] for line in (seed0 / "run" / "log.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 13))  # each epoch once: the stopped one resumed, none redone
    assert [json.loads((d / "cell.json").read_text())["status"] for d in (seed0, seed1)] == ["ok", "ok"]


# ----------------------------------------------------------------------------- rough edges
def test_cell_names_say_what_they_change_and_old_grids_are_found(tmp_path: Path) -> None:
    """A cell is named by what differs from the defaults (`maxhist1000`, not `h1000` or `hall` for
    the whole history); a grid begun under the old names keeps its directories."""
    assert make_cell("sliding", 200, 64, None, "all", "full").name == "sliding-w200-s64"
    assert make_cell("random", 50, 64, 1000, "all", "kshift").name == "random-w50-maxhist1000-kshift"
    assert make_cell("sliding", 200, 64, 1000, "all", "full").label({"max_history"}) == "sliding/s64/maxhist1000"
    pairs = {
        "sliding-w200-s64": "sliding-w200-s64-hall",
        "random-w50-maxhist1000-kshift": "random-w50-h1000-kshift",
        "last-w200-maxhist20": "last-w200-h20",
        "session-w50-fresh": "session-w50-hall-fresh",
    }
    for new, old in pairs.items():
        assert other_spelling(new) == old and other_spelling(old) == new
    assert other_spelling("last-w200") == "last-w200"
    assert GridDir(tmp_path).cell_dir("sliding-w200-s64") == tmp_path / "cells" / "sliding-w200-s64"  # nothing yet: new
    (tmp_path / "cells" / "sliding-w200-s64-hall").mkdir(parents=True)
    assert GridDir(tmp_path).cell_dir("sliding-w200-s64") == tmp_path / "cells" / "sliding-w200-s64-hall"
    (tmp_path / "cells" / "sliding-w200-s64").mkdir()
    assert GridDir(tmp_path).cell_dir("sliding-w200-s64") == tmp_path / "cells" / "sliding-w200-s64"


def test_runs_compare_by_what_they_train_not_by_spelling() -> None:
    base = ["--data", "d", "--epochs", "3", "--dim", "8", "--lr", "0.1"]
    assert trains_the_same(base, [*base, "--threads", "2", "--compile", "--eval-batch-size=4"])  # speed only
    assert trains_the_same(base, ["--lr", "1e-3", *base])  # the last of a repeated flag counts
    assert trains_the_same(base, [*base, "--dropout", str(train_defaults()["dropout"])])  # a default written out
    assert not trains_the_same(base, [*base, "--dropout", "0.3"])
    assert not trains_the_same(None, base)  # nothing recorded
    assert not trains_the_same([*base, "--flag-of-another-version", "1"], base)
    assert what_it_trains(["--dim", "eight"]) is None  # no traceback, no exit
    assert "threads" in SPEED_ONLY_SETTINGS and "dropout" not in SPEED_ONLY_SETTINGS


def test_curves_pick_their_time_unit_by_the_longest_run() -> None:
    assert time_unit(45.0) == (1.0, "seconds")
    assert time_unit(119.0) == (1.0, "seconds")
    assert time_unit(600.0) == (60.0, "minutes")
    assert time_unit(3 * 3600.0) == (3600.0, "hours")


def test_the_legend_draws_each_regime_with_the_plot_s_marker() -> None:
    """The `last` cells are squares in the plot, and so in the legend (an error bar's legend entry drew
    them as round blobs)."""
    from longrec_core import report

    style = report.STYLE

    def row(name: str, regime: str, seconds: float, ndcg: float) -> dict[str, object]:
        mean = {"NDCG@10": ndcg, "train_seconds": seconds, "tokens": seconds * 1e3}
        return {"name": name, "regime": regime, "label": name, "mean": mean, "sd": dict.fromkeys(mean, 0.0)}

    done = [row("last-w20", "last", 10.0, 0.1), row("sliding-w20-s8", "sliding", 30.0, 0.2)]
    fig = report.draw(done, ["NDCG@10"], [done[0]], "test")
    legend = fig.axes[0].get_legend()
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert set(entries) == {"last", "sliding", "Pareto frontier"}
    for regime in ("last", "sliding"):
        assert entries[regime].get_marker() == style[regime][0]
    drawn = {line.get_marker() for line in fig.axes[0].get_lines()}  # the markers the plot itself draws
    assert {style["last"][0], style["sliding"][0]} <= drawn


def test_report_only_accepts_a_grid_trained_with_other_speed_flags_and_old_cell_names(
    data_dir: Path, grid: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    """--threads changes how fast a run trains, not what: a grid trained with --threads 1 is reported
    with --threads 2; and a grid whose cell dirs carry the old names (`-hall`) is found as it is."""
    out, _ = grid
    tiny = [*TINY[: TINY.index("--threads")], "--threads", "2"]
    new, old = out / "cells" / "sliding-w20-s8", out / "cells" / "sliding-w20-s8-hall"
    new.rename(old)
    try:
        proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "sliding,last", *tiny, "--report-only")
        assert proc.returncode == 0, proc.stderr
        assert "2 finished runs, reporting them" in proc.stderr
        rows = {r["name"]: r["status"] for r in csv.DictReader((out / "frontier.csv").open())}
        assert rows == {"sliding-w20-s8": "ok", "last-w20": "ok"}
        assert not new.exists()  # read where it is, nothing made under the new name
        proc = run("--data", str(data_dir), "--out", str(out), "--regimes", "sliding,last", *tiny, "--dropout", "0.3")
        assert proc.returncode == 2 and "was trained with other flags" in proc.stderr  # not a speed flag
    finally:
        old.rename(new)
