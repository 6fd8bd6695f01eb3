"""train.py --config (a TOML or JSON file of its flags; a run's config.json is one) and
--tensorboard (log.jsonl's per-epoch figures as TensorBoard scalars)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longrec_core.prepare import prepare_synthetic
from longrec_core.train_config import config_argv
from longrec_core.train_flags import train_parser

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
TINY = ["--epochs", "2", "--window", "20", "--stride", "8", "--dim", "16", "--ffn", "32", "--batch-size", "32"]
TINY += ["--warmup-steps", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "data"
    prepare_synthetic(path, users=40, items=60, seed=5)
    return path


def train(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAIN, *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def settings(run: Path) -> dict[str, object]:
    return json.loads((run / "config.json").read_text())


def test_config_keys_are_flags_dashed_or_underscored():
    p = train_parser()
    raw = {"window": 20, "kshift-compression": 4, "group_by_length": True, "compile": False, "max_history": None}
    # a key names a flag by its dest (kshift_compression) or any of its names; the flag's first name is passed
    assert config_argv(p, raw, "c.toml") == ["--window", "20", "--emb-compression", "4", "--group-by-length"]
    assert config_argv(p, {"emb-compression": 4}, "c.toml") == ["--emb-compression", "4"]
    assert config_argv(p, {"model": {"dim": 8}, "world_size": 1, "resume": None}, "c.json") == []  # a run's own
    with pytest.raises(ValueError, match="unknown keys: strid, windw"):
        config_argv(p, {"windw": 20, "strid": 4, "dim": 8}, "c.toml")
    with pytest.raises(ValueError, match="group_by_length must be true or false"):
        config_argv(p, {"group_by_length": "yes"}, "c.toml")
    with pytest.raises(ValueError, match="epochs must have a value"):
        config_argv(p, {"epochs": None}, "c.json")


def test_a_run_s_config_json_trains_the_same_run_again(data_dir, tmp_path):
    """The round trip: config.json -> --config -> the same settings and, with the same seed, the same losses."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert train("--data", str(data_dir), "--out", str(a), *TINY).returncode == 0
    proc = train("--config", str(a / "config.json"), "--out", str(b))
    assert proc.returncode == 0, proc.stderr
    sa, sb = settings(a), settings(b)
    assert sb.pop("out") == str(b) and sa.pop("out") == str(a)
    assert sb.pop("config") == str(a / "config.json") and sa.pop("config") is None
    assert sa == sb
    losses = [[json.loads(line)["loss"] for line in (r / "log.jsonl").read_text().splitlines()] for r in (a, b)]
    assert losses[0] == losses[1]


def test_a_toml_config_with_flags_that_win_over_it(data_dir, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'data = "{data_dir}"\nregime = "last"\nwindow = 16\nepochs = 3\ndim = 16\nffn = 32\n'
        "batch-size = 32\nthreads = 1\ngroup_by_length = true\n"
    )
    out = tmp_path / "run"
    proc = train("--config", str(config), "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    s = settings(out)
    assert (s["regime"], s["window"], s["dim"], s["batch_size"], s["group_by_length"]) == ("last", 16, 16, 32, True)
    assert s["epochs"] == 1  # the command line wins


@pytest.mark.parametrize(
    "text, name, message",
    [
        (
            "windw = 20\nstride = 8\nepohcs = 2\n",
            "c.toml",
            "has unknown keys: epohcs, windw (train.py has no such flags)",
        ),
        ('regime = "diagonal"\n', "c.toml", "argument --regime: invalid choice: 'diagonal'"),
        ("window = -3\n", "c.toml", "--window must be >= 1"),
        ("window = [20\n", "c.toml", "is not valid TOML"),
        ("window: 20\n", "c.yaml", "must be a .toml or .json file"),
    ],
)
def test_a_bad_config_exits_2_naming_it_before_any_work(data_dir, tmp_path, text, name, message):
    config = tmp_path / name
    config.write_text(text)
    proc = train("--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr
    assert not (tmp_path / "run").exists()


def test_tensorboard_gets_the_scalars_of_log_jsonl(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, tb = tmp_path / "run", tmp_path / "tb"
    proc = train("--data", str(data_dir), "--out", str(out), *TINY, "--tensorboard", str(tb))
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tb))
    events.Reload()
    assert {"train/loss", "train/tokens_per_second", "valid/NDCG@10", "valid/MRR"} <= set(events.Tags()["scalars"])
    for tag, value in (("train/loss", lambda r: r["loss"]), ("valid/NDCG@10", lambda r: r["valid"]["NDCG@10"])):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(r["epoch"], pytest.approx(value(r), rel=1e-6)) for r in log]


def test_tensorboard_without_the_package_exits_2_before_training(data_dir, tmp_path):
    fake = tmp_path / "site"  # a tensorboard that cannot be imported, whatever this machine has
    (fake / "tensorboard").mkdir(parents=True)
    (fake / "tensorboard" / "__init__.py").write_text("raise ImportError('no tensorboard here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    out = tmp_path / "run"
    proc = train("--data", str(data_dir), "--out", str(out), *TINY, "--tensorboard", str(tmp_path / "tb"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --tensorboard needs the tensorboard package, which is not installed: pip install tensorboard"
    )
    assert not out.exists()
