"""The evaluation protocol of training: the seen-items rule, and the warm-up rule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from longrec_core.datadir import load_data_dir
from longrec_core.metrics import resolve_filter_seen
from longrec_core.prepare import Log, PrepParams, prepare, prepare_synthetic
from longrec_core.schedule import default_warmup_steps, lr_factor

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--epochs",
    "3",
    "--window",
    "12",
    "--regime",
    "last",
    "--dim",
    "16",
    "--heads",
    "1",
    "--ffn",
    "16",
    "--batch-size",
    "16",
    "--threads",
    "1",
    "--patience",
    "0",
]


def prepare_without_repeats(out: Path, users: int = 50, items: int = 60, seed: int = 1) -> Path:
    """A log in which no user consumes an item twice (as in ml-1m): each user rates a random
    subset of the items, in a random order."""
    rng = np.random.default_rng(seed)
    user, item = [], []
    for u in range(users):
        n = int(rng.integers(4, 30))
        user += [u] * n
        item += list(rng.choice(items, n, replace=False))
    ts = np.arange(len(user), dtype=np.int64)
    log = Log(
        user=np.array(user),
        item=np.array(item),
        ts=ts,
        types=None,
        user_ids=pl.Series("id", np.arange(users)),
        item_ids=pl.Series("id", np.arange(items)),
    )
    return prepare(log, out, PrepParams(), {"format": "test"})


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    return {
        "unique": prepare_without_repeats(root / "unique"),
        "repeats": prepare_synthetic(root / "repeats", users=40, items=30, seed=2),
    }


def test_auto_filters_exactly_when_no_target_repeats_a_seen_item(dirs):
    unique, repeats = load_data_dir(dirs["unique"]), load_data_dir(dirs["repeats"])
    assert unique.repeat_target_share() == 0.0
    assert resolve_filter_seen("auto", unique) is True
    share = repeats.repeat_target_share()
    # the share counted by hand: targets whose item occurs earlier in the user's history
    hits = total = 0
    for split in ("valid", "test"):
        for u, e in zip(*repeats.eval_targets(split)):
            hits += repeats.items[e] in repeats.items[repeats.offsets[u] : e]
            total += 1
    assert 0 < share == hits / total
    assert resolve_filter_seen("auto", repeats) is False
    assert resolve_filter_seen("yes", repeats) is True and resolve_filter_seen("no", unique) is False
    with pytest.raises(ValueError, match="filter_seen must be one of"):
        resolve_filter_seen("maybe", unique)


def test_repeat_share_on_a_sample_of_users(dirs):
    repeats = load_data_dir(dirs["repeats"])
    assert 0 <= repeats.repeat_target_share(max_users=5) <= 1


def test_default_warmup_is_a_tenth_of_the_first_epoch_capped_at_100():
    assert default_warmup_steps(48) == 5  # ml-1m, batch 128: warm-up ends inside the first epoch
    assert default_warmup_steps(1) == 1 and default_warmup_steps(0) == 1
    assert default_warmup_steps(999) == 100 and default_warmup_steps(10**6) == 100


def test_lr_factor_warms_up_linearly_then_holds_or_decays():
    assert [lr_factor(s, warmup=4, total=10, schedule="constant") for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert lr_factor(4, warmup=4, total=10, schedule="cosine") == 1.0
    assert lr_factor(10, warmup=4, total=10, schedule="cosine") == pytest.approx(0.0)
    assert lr_factor(7, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, warmup=0, total=1, schedule="linear")


def run(*argv):
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        timeout=300,
        env=os.environ,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("rule, filtered", [("auto", True), ("no", False)])
def test_validation_ranks_as_eval_does(dirs, tmp_path, rule, filtered):
    """The best epoch's validation metrics in log.jsonl are eval.py's on the saved model, which by
    default follows the seen-items rule the run validated with; and the default warm-up follows the
    rule above."""
    out = tmp_path / "run"
    run("scripts/train.py", "--data", str(dirs["unique"]), "--out", str(out), "--filter-seen", rule, *TINY)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert all(rec["filter_seen"] is filtered for rec in log) and summary["filter_seen"] is filtered
    assert summary["warmup_steps"] == default_warmup_steps(summary["steps"] // summary["epochs"])
    best = log[summary["best_epoch"] - 1]["valid"]  # epochs count from 1
    metrics = tmp_path / "valid.json"
    run(
        "scripts/eval.py",
        "--run",
        str(out),
        "--split",
        "valid",
        "--bootstrap",
        "0",  # the run's own rule
        "--out",
        str(metrics),
    )
    got = json.loads(metrics.read_text())
    assert got["filter_seen"] is filtered and got["filter_seen_rule"] == rule
    for name in ("HR@10", "NDCG@10", "MRR"):
        assert got["metrics"][name] == pytest.approx(best[name], rel=1e-12, abs=1e-12)
