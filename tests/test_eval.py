"""scripts/eval.py end to end: on run dirs made here from a tiny synthetic data dir (a
random-init model saved the way train.py saves it), then the real pipeline
prep.py | train.py | eval.py when those scripts exist.

Most runs are in-process (runpy, so torch is imported once); the CLI contract (exit
code 2, one-line stdout, stdin pipe) is also checked through a real subprocess.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec_core.datadir import load_data_dir
from longrec_core.metrics import bootstrap_ci, evaluate, metrics_from_ranks
from longrec_core.model import ModelConfig, SASRec, load_model
from longrec_core.prepare import prepare_synthetic

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "scripts" / "eval.py"


def make_run(run: Path, data: Path, seed: int, **cfg: object) -> Path:
    """A finished run dir as train.py writes it (config.json, model.pt, summary.json), with
    random-init weights."""
    torch.manual_seed(seed)
    d = load_data_dir(data)
    mc = ModelConfig(n_items=d.n_items, max_len=12, dim=16, layers=1, heads=1, ffn=32, **cfg)  # type: ignore[arg-type]
    run.mkdir(parents=True)
    torch.save({"model": SASRec(mc).state_dict(), "model_config": mc.to_dict()}, run / "model.pt")
    (run / "config.json").write_text(json.dumps({"data": str(data.resolve()), "model": mc.to_dict()}))
    (run / "summary.json").write_text(json.dumps({"stop_reason": "epochs", "epochs": 1}))
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("eval")
    data = prepare_synthetic(tmp / "data", users=80, items=60, median_len=15, max_len=100, seed=1)
    other = prepare_synthetic(tmp / "other", users=30, items=25, median_len=10, max_len=50, seed=2)
    a = make_run(tmp / "runs" / "a", data, seed=0)
    b = make_run(tmp / "runs" / "b", data, seed=1, item_emb="kshift", kshift_k=2, kshift_compression=4)
    return {"tmp": tmp, "data": data, "other": other, "a": a, "b": b}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_eval(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    stdin: io.StringIO | None = None,
    cwd: Path | None = None,
) -> tuple[int, str, str]:
    """Run scripts/eval.py in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [str(EVAL), *args])
    monkeypatch.setattr(sys, "stdin", stdin if stdin is not None else io.StringIO(""))
    if cwd is not None:
        monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        runpy.run_path(str(EVAL), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_metrics_json_and_ranks(world, monkeypatch, capsys):
    code, out, err = run_eval(monkeypatch, capsys, "--run", str(world["a"]), "--bootstrap", "200")
    assert code == 0, err
    path = world["a"] / "metrics_test.json"
    assert out == f"{path}\n"  # stdout: the metrics path, one line
    res = json.loads(path.read_text())
    with np.load(world["a"] / res["ranks_file"]) as z:
        users, ranks = z["users"], z["ranks"]
        assert z["split"].item() == "test" and not z["filter_seen"].item()
    # the script's ranks are the library's single evaluation path on the same model and data
    data = load_data_dir(world["data"])
    want_users, want_ranks = evaluate(load_model(world["a"]), data, "test")
    np.testing.assert_array_equal(users, want_users)
    np.testing.assert_array_equal(ranks, want_ranks)
    assert len(users) == res["n_users"] == len(data.eval_targets("test")[0]) > 50
    assert res["metrics"] == pytest.approx(metrics_from_ranks(ranks))
    assert res["ci"] == {k: list(v) for k, v in bootstrap_ci(ranks, n_boot=200, seed=0).items()}
    assert res["window"] == 12 and res["n_items"] == data.n_items and res["split"] == "test"
    assert "HR" in err and "NDCG" in err  # the table is on stderr


def test_sample_users_ranks_a_seeded_subset_on_the_full_catalogue(world, monkeypatch, capsys):
    full_users, full_ranks = evaluate(load_model(world["a"]), load_data_dir(world["data"]), "test")
    out = world["tmp"] / "sampled.json"
    code, _, err = run_eval(
        monkeypatch, capsys, "--run", str(world["a"]), "--sample-users", "20", "--bootstrap", "0", "--out", str(out)
    )
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["n_users"] == 20 and res["sample_users"] == 20
    with np.load(out.with_name("sampled.ranks.npz")) as z:
        users, ranks = z["users"], z["ranks"]
    assert len(set(users)) == 20 and set(users) <= set(full_users)
    np.testing.assert_array_equal(ranks, full_ranks[np.searchsorted(full_users, users)])  # the same ranks
    code, _, err = run_eval(monkeypatch, capsys, "--run", str(world["a"]), "--sample-users", "0")
    assert code == 2 and "--sample-users must be >= 1" in err


def test_valid_split_from_stdin_and_filter_seen(world, monkeypatch, capsys):
    code, out, err = run_eval(monkeypatch, capsys, "--split", "valid", stdin=io.StringIO(f"{world['a']}\n"))
    assert code == 0, err
    plain = json.loads(Path(out.strip()).read_text())
    assert Path(out.strip()) == world["a"] / "metrics_valid.json" and plain["split"] == "valid"
    out_path = world["tmp"] / "seen.json"
    code, out, err = run_eval(
        monkeypatch,
        capsys,
        "--run",
        str(world["a"]),
        "--split",
        "valid",
        "--filter-seen",
        "--out",
        str(out_path),
        "--ks",
        "10,1",
        "--bootstrap",
        "0",
    )
    assert code == 0, err
    seen = json.loads(out_path.read_text())
    assert seen["filter_seen"] and seen["ks"] == [1, 10] and seen["ci"] == {} and "HR@5" not in seen["metrics"]
    with np.load(world["a"] / "metrics_valid.ranks.npz") as z1, np.load(world["tmp"] / "seen.ranks.npz") as z2:
        np.testing.assert_array_equal(z1["users"], z2["users"])
        assert (z2["ranks"] <= z1["ranks"]).all() and (z2["ranks"] < z1["ranks"]).any()


def test_newest_run_when_stdin_is_a_terminal(world, monkeypatch, capsys):
    os.utime(world["b"] / "model.pt")  # b is now the newest finished run
    (world["tmp"] / "runs" / "unfinished").mkdir(exist_ok=True)  # no model.pt: never picked
    # newer weights of a run still training (no summary.json) or stopped are not picked either
    for name, summary in (("training", None), ("stopped", {"stop_reason": "interrupted"})):
        half = world["tmp"] / "runs" / name
        if not half.exists():
            shutil.copytree(world["b"], half)
            (half / "summary.json").unlink()
            if summary is not None:
                (half / "summary.json").write_text(json.dumps(summary))
        code, _, err = run_eval(monkeypatch, capsys, "--run", str(half), "--out", str(world["tmp"] / "h.json"))
        assert code == 2 and err.count("\n") == 1 and "cannot be evaluated" in err, err
        assert f"train.py --resume {half}" in err and not (world["tmp"] / "h.json").exists()
    code, out, err = run_eval(monkeypatch, capsys, "--bootstrap", "0", stdin=Tty(), cwd=world["tmp"])
    assert code == 0, err
    assert Path(out.strip()).resolve() == (world["b"] / "metrics_test.json").resolve()


def test_compare(world, monkeypatch, capsys):
    for run in ("a", "b"):
        assert run_eval(monkeypatch, capsys, "--run", str(world[run]), "--bootstrap", "0")[0] == 0
    code, _out, err = run_eval(
        monkeypatch,
        capsys,
        "--run",
        str(world["a"]),
        "--compare",
        str(world["b"]),
        "--metrics",
        "NDCG@10,MRR",
        "--out",
        str(world["tmp"] / "ab.json"),
    )
    assert code == 0, err
    cmp = json.loads((world["tmp"] / "ab.json").read_text())["compare"]
    with np.load(world["a"] / "metrics_test.ranks.npz") as za, np.load(world["b"] / "metrics_test.ranks.npz") as zb:
        assert cmp["n_common_users"] == len(za["users"]) == len(zb["users"])
        mrr = cmp["results"][1]
        assert [r["metric"] for r in cmp["results"]] == ["NDCG@10", "MRR"]
        assert mrr["mean_a"] == pytest.approx(metrics_from_ranks(za["ranks"])["MRR"])
        assert mrr["mean_b"] == pytest.approx(metrics_from_ranks(zb["ranks"])["MRR"])
    assert "paired" in err
    for same in ("metrics_test.ranks.npz", "metrics_test.json"):  # a run against itself, by file
        code, _, err = run_eval(
            monkeypatch,
            capsys,
            "--run",
            str(world["a"]),
            "--compare",
            str(world["a"] / same),
            "--bootstrap",
            "0",
            "--out",
            str(world["tmp"] / "aa.json"),
            "--force",
        )
        assert code == 0, err
        for r in json.loads((world["tmp"] / "aa.json").read_text())["compare"]["results"]:
            assert r["diff"] == 0 and r["p_value"] == 1.0


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("no_model", "has no model.pt"),
        ("wrong_data", "items but the model"),
        ("not_data", "not a data dir"),
        ("compare_mismatch", "filter_seen"),
        ("compare_missing", "evaluate the other run first"),
        ("bad_metric", "unknown metric"),
        ("bad_ks", "--ks"),
        ("empty_stdin", "stdin was empty"),
        ("negative_seed", "--seed must be >= 0"),
        ("huge_bootstrap", "--bootstrap must be <= 1,000,000"),
        ("unknown_flag", "unrecognized arguments: --bogus"),
        ("out_is_a_dir", "cannot write"),
        ("empty_out", "--out is empty"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(world, monkeypatch, capsys, case, message):
    empty = world["tmp"] / "empty_run"
    empty.mkdir(exist_ok=True)
    a = str(world["a"])
    args = {
        "missing": ["--run", str(world["tmp"] / "nope")],
        "no_model": ["--run", str(empty)],
        "wrong_data": ["--run", a, "--data", str(world["other"])],
        "not_data": ["--run", a, "--data", str(empty)],
        "compare_mismatch": ["--run", a, "--filter-seen", "--compare", a, "--out", str(empty / "x.json")],
        "compare_missing": ["--run", a, "--compare", str(empty), "--out", str(empty / "x.json")],
        "bad_metric": ["--run", a, "--metrics", "AUC"],
        "bad_ks": ["--run", a, "--ks", "10,x"],
        "empty_stdin": [],
        "negative_seed": ["--run", a, "--seed", "-1", "--out", str(empty / "x.json")],
        "huge_bootstrap": ["--run", a, "--bootstrap", "1000001", "--out", str(empty / "x.json")],
        "unknown_flag": ["--run", a, "--bogus"],
        "out_is_a_dir": ["--run", a, "--out", str(empty / "x.json")],
        "empty_out": ["--run", a, "--out", ""],
    }[case]
    if case == "out_is_a_dir":  # refused before the ranking, not at the rename (leaving x.ranks.npz behind)
        (empty / "x.json").mkdir()
    if case == "compare_mismatch":  # a's test ranks exist, computed without --filter-seen
        assert run_eval(monkeypatch, capsys, "--run", a, "--bootstrap", "0")[0] == 0
    code, out, err = run_eval(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (empty / "x.json").is_file() and not (empty / "x.ranks.npz").exists()  # nothing half-written
    if case == "out_is_a_dir":
        (empty / "x.json").rmdir()


def test_an_existing_out_is_replaced_only_with_force(world, monkeypatch, capsys, tmp_path):
    precious = tmp_path / "precious.json"
    precious.write_text("precious")
    (tmp_path / "ranks.ranks.npz").write_text("ranks")  # the ranks file of --out ranks.json
    for out in (precious, tmp_path / "ranks.json"):
        code, stdout, err = run_eval(
            monkeypatch, capsys, "--run", str(world["a"]), "--bootstrap", "0", "--out", str(out)
        )
        assert code == 2 and stdout == "" and err.count("\n") == 1, err
        assert err.startswith("error: ") and "already exists; pass --force" in err
    assert precious.read_text() == "precious" and (tmp_path / "ranks.ranks.npz").read_text() == "ranks"
    assert not (tmp_path / "precious.ranks.npz").exists() and not (tmp_path / "ranks.json").exists()
    code, _, err = run_eval(
        monkeypatch, capsys, "--run", str(world["a"]), "--bootstrap", "0", "--out", str(precious), "--force"
    )
    assert code == 0, err
    assert json.loads(precious.read_text())["split"] == "test"


def test_a_killed_evaluation_leaves_no_metrics_and_its_rerun_replaces_the_ranks(world, monkeypatch, capsys, tmp_path):
    """the ranks file is written first and the metrics JSON last; what a kill between
    them leaves (ranks alone) is replaced by the rerun, not refused; and a metrics JSON is never
    left beside ranks of another evaluation."""
    out = tmp_path / "m.json"
    args = ["--run", str(world["a"]), "--bootstrap", "0", "--out", str(out)]
    assert run_eval(monkeypatch, capsys, *args)[0] == 0
    want = out.read_text()
    out.unlink()  # what a kill after the ranks file leaves
    code, _, err = run_eval(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads(out.read_text())["metrics"] == json.loads(want)["metrics"]
    # a rerun with --force drops the old metrics before it writes new ranks
    written = []
    real = np.savez

    def killed(*a: object, **k: object) -> None:
        written.append(out.exists())
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    code, _, err = run_eval(monkeypatch, capsys, *args, "--force", "--split", "valid")
    monkeypatch.setattr(np, "savez", real)
    assert code == 130 and written == [False] and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ranks.npz"]


def test_a_data_dir_other_than_the_runs_is_refused(world, tmp_path, monkeypatch, capsys):
    """another data dir with the same number of items was ranked without a word;
    the run's recorded fingerprint of its data dir is checked (older runs: the item count)."""
    from longrec_core.datadir import fingerprint

    run = tmp_path / "run"
    shutil.copytree(world["a"], run)
    config = json.loads((run / "config.json").read_text())
    config["data_fingerprint"] = fingerprint(load_data_dir(world["data"]))
    (run / "config.json").write_text(json.dumps(config))
    n_items = load_data_dir(world["data"]).n_items
    same_size = prepare_synthetic(tmp_path / "same", users=80, items=60, median_len=15, max_len=100, seed=7)
    assert load_data_dir(same_size).n_items == n_items
    out = ["--bootstrap", "0", "--out", str(tmp_path / "m.json")]
    code, _, err = run_eval(monkeypatch, capsys, "--run", str(run), "--data", str(same_size), *out)
    assert code == 2 and "is not the one" in err and "trained on" in err and err.count("\n") == 1, err
    assert run_eval(monkeypatch, capsys, "--run", str(run), *out)[0] == 0  # its own data dir


@pytest.mark.parametrize(
    "case, damaged, message",
    [
        ("model_empty", "model.pt", "is not a model saved by train.py"),
        ("model_junk", "model.pt", "is not a model saved by train.py"),
        ("model_keys", "model.pt", "is not a model saved by train.py"),
        ("model_truncated", "model.pt", "is not a model saved by train.py"),
        ("config_list", "config.json", "holds no JSON object"),
        ("config_bad_json", "config.json", "is not readable JSON"),
        ("ranks_junk", "other.ranks.npz", "is not a ranks file written by eval.py"),
        ("ranks_no_ranks", "other.ranks.npz", "must hold integer arrays users and ranks of one length"),
        ("ranks_short", "other.ranks.npz", "must hold integer arrays users and ranks of one length"),
        ("ranks_twice", "other.ranks.npz", "a user appears twice"),
    ],
)
def test_damaged_files_exit_2_naming_the_file(world, monkeypatch, capsys, tmp_path, case, damaged, message):
    run = tmp_path / "run"
    shutil.copytree(world["a"], run)
    args = ["--run", str(run), "--bootstrap", "0", "--out", str(tmp_path / "m.json")]
    if case.startswith("ranks"):
        assert run_eval(monkeypatch, capsys, *args[:4], "--out", str(tmp_path / "other.json"))[0] == 0
        with np.load(tmp_path / damaged) as z:
            good = {k: z[k] for k in z.files}
        args += ["--compare", str(tmp_path / damaged)]
    path = tmp_path / damaged if case.startswith("ranks") else run / damaged
    raw = path.read_bytes()
    if case == "model_empty":
        path.write_bytes(b"")
    elif case in ("model_junk", "ranks_junk"):
        path.write_text("junk")
    elif case == "model_keys":
        torch.save({"model": {"x": torch.zeros(1)}, "model_config": torch.load(path)["model_config"]}, path)
    elif case == "model_truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif case == "config_list":
        path.write_text("[]")
    elif case == "config_bad_json":
        path.write_text("{")
    elif case == "ranks_no_ranks":
        np.savez(path, **{k: v for k, v in good.items() if k != "ranks"})
    elif case == "ranks_short":
        np.savez(path, **{**good, "ranks": good["ranks"][:-1]})
    elif case == "ranks_twice":
        np.savez(path, **{**good, "users": np.r_[good["users"][:1], good["users"][:-1]]})
    code, out, err = run_eval(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(path) in err and message in err, err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.ranks.npz").exists()


def test_compare_with_a_damaged_summary_leaves_the_costs_out(world, monkeypatch, capsys, tmp_path):
    """The costs are shown after the metrics are written: a damaged summary.json must not fail the evaluation."""
    for name in ("a", "b"):
        shutil.copytree(world["a"], tmp_path / name)
        summary = {"stop_reason": "epochs", "train_seconds": 1.0, "tokens": 10, "epochs": 1}
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        assert run_eval(monkeypatch, capsys, "--run", str(tmp_path / name), "--bootstrap", "0")[0] == 0
    code, _, err = run_eval(
        monkeypatch,
        capsys,
        "--run",
        str(tmp_path / "a"),
        "--bootstrap",
        "0",
        "--compare",
        str(tmp_path / "b"),
        "--out",
        str(tmp_path / "ab.json"),
    )
    assert code == 0 and "training seconds" in err, err
    (tmp_path / "b" / "summary.json").write_text("{")
    code, _, err = run_eval(
        monkeypatch,
        capsys,
        "--run",
        str(tmp_path / "a"),
        "--bootstrap",
        "0",
        "--compare",
        str(tmp_path / "b"),
        "--out",
        str(tmp_path / "ab2.json"),
    )
    assert code == 0 and "paired" in err and "training seconds" not in err, err


def test_cli_subprocess_exit_code(world):
    """The real process: exit status 2, empty stdout, no traceback (success through a pipe is
    checked by the pipeline test below)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(
        [sys.executable, str(EVAL), "--run", str(world["a"]), "--data", str(world["other"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == "", bad.stderr
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


@pytest.mark.skipif(
    not (ROOT / "scripts" / "train.py").exists() or not (ROOT / "scripts" / "prep.py").exists(),
    reason="scripts/train.py or scripts/prep.py does not exist yet",
)
def test_pipeline_prep_train_eval(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def stage(*args: str, stdin: str = "") -> str:
        r = subprocess.run(
            [sys.executable, *args], input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) == 1, r.stdout
        return r.stdout

    data = stage(
        str(ROOT / "scripts" / "prep.py"),
        "--synthetic",
        "--users",
        "60",
        "--items",
        "40",
        "--out",
        str(tmp_path / "data"),
    )
    run = stage(
        str(ROOT / "scripts" / "train.py"),
        "--epochs",
        "1",
        "--window",
        "8",
        "--dim",
        "16",
        "--layers",
        "1",
        "--ffn",
        "32",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "runs" / "r"),
        stdin=data,
    )
    metrics = stage(str(EVAL), "--bootstrap", "50", stdin=run)
    res = json.loads(Path(metrics.strip()).read_text())
    assert res["n_users"] > 0 and 0 <= res["metrics"]["HR@10"] <= 1 and res["window"] == 8
