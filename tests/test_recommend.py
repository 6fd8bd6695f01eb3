"""scripts/recommend.py and longrec_core.recommend: top-k items for a history against a brute-force
ranking of the whole catalogue with seen items removed, raw ids through items.parquet, the input and
output formats, bad input (exit 2, one sentence), the exported model (torch.export) scoring as the model does,
and train.py | recommend.py end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from longrec_core.datadir import item_ids, load_data_dir, user_ids
from longrec_core.model import ModelConfig, SASRec, load_model
from longrec_core.prepare import prepare_synthetic
from longrec_core.recommend import Recommender, export_model, padded, parse_histories

ROOT = Path(__file__).resolve().parents[1]
RECOMMEND = [sys.executable, str(ROOT / "scripts" / "recommend.py")]


def make_run(run: Path, data: Path, seed: int, filter_seen: str = "yes", **cfg: object) -> Path:
    """A run dir as train.py writes it (config.json + model.pt), with random-init weights."""
    torch.manual_seed(seed)
    d = load_data_dir(data)
    mc = ModelConfig(n_items=d.n_items, max_len=12, dim=16, layers=1, heads=1, ffn=32, **cfg)  # type: ignore[arg-type]
    run.mkdir(parents=True)
    torch.save({"model": SASRec(mc).state_dict(), "model_config": mc.to_dict()}, run / "model.pt")
    config = {"data": str(data.resolve()), "model": mc.to_dict(), "filter_seen": filter_seen}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("recommend")
    data = prepare_synthetic(tmp / "data", users=40, items=50, median_len=15, max_len=60, seed=4)
    return {
        "tmp": tmp,
        "data": data,
        "a": make_run(tmp / "runs" / "a", data, seed=0),
        "open": make_run(tmp / "runs" / "open", data, seed=0, filter_seen="no"),
        "kshift": make_run(tmp / "runs" / "k", data, seed=1, item_emb="kshift", kshift_k=2, kshift_compression=4),
    }


def run(*argv: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECOMMEND, *argv],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def brute_force(model: SASRec, history: np.ndarray, k: int, filter_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores by scoring the whole catalogue at once and sorting."""
    with torch.no_grad():
        hidden = model(torch.from_numpy(padded([history], model.cfg.max_len)))[0, -1]
        scores = (model.item_table() @ hidden).numpy().astype(np.float64)  # (N+1,)
    scores[0] = -np.inf  # padding
    if filter_seen:
        scores[history] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


# ----------------------------------------------------------------------------- the library call
@pytest.mark.parametrize("filter_seen", [True, False])
def test_topk_is_the_brute_force_ranking_with_seen_items_removed(world, filter_seen):
    d = load_data_dir(world["data"])
    rec = Recommender.load(world["a"], filter_seen=filter_seen, item_chunk=7)  # chunks that split the top-k
    model = load_model(world["a"])
    histories = [d.items[d.offsets[u] : d.offsets[u + 1]].astype(np.int64) for u in range(d.n_users)]
    items, scores = rec.topk_indices(histories, 8)
    for h, it, sc in zip(histories, items, scores):
        want_items, want_scores = brute_force(model, h, 8, filter_seen)
        np.testing.assert_allclose(sc, want_scores, rtol=1e-5, atol=1e-6)
        assert list(it) == list(want_items)
        if filter_seen:
            assert not set(it) & set(h.tolist())


def test_raw_ids_map_through_items_parquet_and_unknown_ones_are_skipped(world):
    rec = Recommender.load(world["a"])
    assert rec.filter_seen is True  # the run's rule (config.json: yes)
    raw = item_ids(world["data"]).to_list()  # raw id of index i + 1
    hist = [raw[4], raw[0], raw[9]]
    top = rec.topk([hist, [str(raw[4]), "no-such-item", 10**9], ["nothing"]], k=5)
    items, scores = rec.topk_indices([np.array([5, 1, 10])], 5)
    assert [i for i, _ in top[0]] == [raw[i - 1] for i in items[0]]
    np.testing.assert_allclose([s for _, s in top[0]], scores[0], rtol=1e-5)  # batches of 3 and 1
    assert [i for i, _ in top[1]] == [i for i, _ in rec.topk([[raw[4]]], k=5)[0]]  # "12" and 12: one item
    assert top[2] == [] and not set(hist) & {i for i, _ in top[0]}
    rec.topk([[raw[4], "x", "y"]], k=5)
    assert rec.last_unknown == 2


def test_a_catalogue_smaller_than_k_gives_every_candidate(world):
    rec = Recommender.load(world["a"])
    d = load_data_dir(world["data"])
    everything = np.arange(1, d.n_items + 1)
    items, scores = rec.topk_indices([everything[:-3]], k=10)  # all but 3 items seen
    assert sorted(items[0][:3]) == list(everything[-3:]) and (items[0][3:] == 0).all()
    assert np.isinf(scores[0][3:]).all()


def test_histories_in_each_file_format(tmp_path):
    lines = "u1 a b c\nu2 d\n\nu1 e\n"
    assert parse_histories(lines, "lines", "f") == (["u1", "u2"], [["a", "b", "c", "e"], ["d"]])
    csv = "user,item,time\nu1,a,1\nu2,d,2\nu1,b,3\n"
    assert parse_histories(csv, "csv", "f") == (["u1", "u2"], [["a", "b"], ["d"]])
    jsonl = '{"user": 7, "items": [1, "b"]}\n{"user": "x", "items": []}\n'
    assert parse_histories(jsonl, "jsonl", "f") == (["7", "x"], [["1", "b"], []])
    with pytest.raises(ValueError, match="needs a header with columns user and item"):
        parse_histories("a,b\n1,2\n", "csv", "f")
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        parse_histories('{"user": 1, "items": []}\nnope\n', "jsonl", "f")


# ----------------------------------------------------------------------------- the stage
def test_stage_recommends_for_data_dir_users_in_each_format(world):
    d = load_data_dir(world["data"])
    users = user_ids(world["data"]).to_list()
    raw_items = item_ids(world["data"]).to_list()
    rec = Recommender.load(world["a"])
    want_items, want_scores = rec.topk_indices([d.items[d.offsets[u] : d.offsets[u + 1]] for u in (2, 5)], 4)
    for suffix in (".csv", ".parquet", ".jsonl"):
        out = world["tmp"] / f"recs{suffix}"
        proc = run("--run", str(world["a"]), "--users", f"{users[2]},{users[5]}", "-k", "4", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{out}\n"  # stdout: the output path, one line
        if suffix == ".jsonl":
            got = [json.loads(line) for line in out.read_text().splitlines()]
            assert [g["user"] for g in got] == [users[2], users[5]]
            assert [g["items"] for g in got] == [[raw_items[i - 1] for i in row] for row in want_items]
            np.testing.assert_allclose([g["scores"] for g in got], want_scores, rtol=1e-6)
        else:
            df = pl.read_csv(out) if suffix == ".csv" else pl.read_parquet(out)
            assert df.columns == ["user", "rank", "item", "score"]
            assert df["user"].to_list() == [users[2]] * 4 + [users[5]] * 4
            assert df["rank"].to_list() == [1, 2, 3, 4] * 2
            assert df["item"].to_list() == [raw_items[i - 1] for i in want_items.ravel()]
            np.testing.assert_allclose(df["score"].to_numpy(), want_scores.ravel(), rtol=1e-6)
    out = world["tmp"] / "recs.csv"
    proc = run("--run", str(world["a"]), "--users", str(users[2]), "--out", str(out))
    assert proc.returncode == 2 and "already exists; pass --force" in proc.stderr


def test_stage_default_is_every_user_and_split_test_is_eval_s_history(world):
    d = load_data_dir(world["data"])
    proc = run("--run", str(world["a"]))
    assert proc.returncode == 0, proc.stderr
    out = world["a"] / "recommendations.parquet"
    assert proc.stdout == f"{out}\n"
    df = pl.read_parquet(out)
    assert df["user"].n_unique() == d.n_users and len(df) == 10 * d.n_users
    proc = run("--run", str(world["a"]), "--split", "test", "-k", "3", "--out", str(world["tmp"] / "t.jsonl"))
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in (world["tmp"] / "t.jsonl").read_text().splitlines()]
    users, end = d.eval_targets("test")
    rec = Recommender.load(world["a"])
    want, _ = rec.topk_indices([d.items[d.offsets[u] : e] for u, e in zip(users, end)], 3)
    raw_items = item_ids(world["data"]).to_list()
    assert [g["items"] for g in got] == [[raw_items[i - 1] for i in row] for row in want]


def test_stage_reads_histories_from_stdin_and_skips_unknown_ids(world):
    raw = item_ids(world["data"]).to_list()
    out = world["tmp"] / "stdin.jsonl"
    text = f"alice {raw[3]} {raw[7]} nope\nbob {raw[1]}\ncarol nothing\n"
    proc = run("--run", str(world["open"]), "--histories", "-", "-k", "3", "--out", str(out), stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 of 5 item ids not in the catalogue" in proc.stderr
    assert "left out 1 users with no known item" in proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["user"] for g in got] == ["alice", "bob"]
    rec = Recommender.load(world["open"])
    assert rec.filter_seen is False  # the run's rule: no
    assert [[i for i, _ in r] for r in rec.topk([[raw[3], raw[7]], [raw[1]]], k=3)] == [g["items"] for g in got]


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--histories", "-"], "u nope never\n", "none of the 2 item ids in stdin is in the catalogue"),
        (["--histories", "-"], "", "stdin holds no histories"),
        (["--out", "recs.txt"], None, "must end in .parquet, .csv, .jsonl"),
        (["-k", "0"], None, "--k must be >= 1"),
        (["--users", "no-such-user"], None, "user no-such-user is not in"),
        (["--export", "m.pt2", "--out", "r.csv"], None, "--export writes the model only"),
        (["--data", "/nonexistent"], None, "/nonexistent"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(world, args, stdin, message):
    proc = run("--run", str(world["a"]), *args, stdin=stdin, cwd=world["tmp"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr


def test_a_dir_without_a_model_is_refused(world):
    proc = run("--run", str(world["tmp"]))
    assert proc.returncode == 2 and "has no model.pt" in proc.stderr


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("name", ["a", "kshift"])
def test_exported_model_scores_as_the_original(world, name):
    out = world["tmp"] / f"export-{name}.pt2"
    proc = run("--run", str(world[name]), "--export", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"
    extra = {"longrec.json": ""}
    scripted = torch.export.load(out, extra_files=extra).module()
    model = load_model(world[name])
    meta = json.loads(extra["longrec.json"])
    assert meta["max_len"] == model.cfg.max_len and meta["n_items"] == model.n_items
    d = load_data_dir(world["data"])
    for users in (range(5), range(5, 18)):  # two batch sizes: the batch dimension is not fixed
        hist = torch.from_numpy(padded([d.items[d.offsets[u] : d.offsets[u + 1]] for u in users], model.cfg.max_len))
        got = scripted(hist)
        with torch.no_grad():
            want = model(hist)[:, -1] @ model.item_table().T
        assert got.shape == (len(users), model.n_items + 1) and torch.isinf(got[:, 0]).all()
        torch.testing.assert_close(got[:, 1:], want[:, 1:], rtol=1e-5, atol=1e-5)


def test_export_writes_atomically_and_refuses_an_existing_file(world, tmp_path):
    out = tmp_path / "m.pt2"
    model = load_model(world["a"])
    export_model(model, out)
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["m.pt2"]
    proc = run("--run", str(world["a"]), "--export", str(out))
    assert proc.returncode == 2 and "already exists" in proc.stderr


# ----------------------------------------------------------------------------- end to end
def test_train_then_recommend_for_a_user(world, tmp_path):
    """The README's two lines: train.py | recommend.py --users U --out recs.csv."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    train = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "--data",
        str(world["data"]),
        "--out",
        str(tmp_path / "run"),
    ]
    tiny = ["--epochs", "1", "--window", "10", "--dim", "16", "--ffn", "32", "--threads", "1"]
    user = str(user_ids(world["data"])[3])
    recs = tmp_path / "recs.csv"
    trained = subprocess.run(
        [*train, *tiny], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=300
    )
    assert trained.returncode == 0, trained.stderr
    proc = run("--users", user, "--out", str(recs), stdin=trained.stdout)
    assert proc.returncode == 0, proc.stderr
    df = pl.read_csv(recs)
    assert len(df) == 10 and df["user"].cast(pl.String).to_list() == [user] * 10
    seen = load_data_dir(world["data"])
    u = int(user_ids(world["data"]).to_list().index(int(user)))
    seen_raw = set(item_ids(world["data"]).gather(seen.items[seen.offsets[u] : seen.offsets[u + 1]] - 1).to_list())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["filter_seen"] is False or not seen_raw & set(df["item"].to_list())


def test_stage_runs_as_a_module_and_entry_point():
    """`python -m longrec_core recommend` and the console entry points run the same script."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "longrec_core", "recommend", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and "--histories" in proc.stdout and "recommend.py" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "longrec_core", "nope"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "usage: python -m longrec_core" in proc.stderr
