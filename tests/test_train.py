"""Training examples (windows per regime, fresh targets, batches) and train.py end to end."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torchrun_train

import longrec_core as lc
from longrec_core.codes import hashed_codes, item_codes, training_events
from longrec_core.datadir import _array_sha256, load_data_dir
from longrec_core.examples import epoch_windows, iter_batches, make_batch, n_batches, regime_of, shuffled_order
from longrec_core.model import ModelConfig, SASRec, load_model, saved_codes
from longrec_core.prepare import prepare_synthetic

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
TINY = [
    "--epochs",
    "2",
    "--window",
    "20",
    "--stride",
    "8",
    "--dim",
    "16",
    "--heads",
    "2",
    "--ffn",
    "32",
    "--batch-size",
    "32",
    "--warmup-steps",
    "2",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "data"
    prepare_synthetic(path, users=60, items=80, seed=3)
    return path


def run(*argv, check=True, stdin=subprocess.DEVNULL, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([*argv], capture_output=True, text=True, stdin=stdin, env=env, cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize("regime", ["last", "sliding"])
def test_epoch_windows_are_the_core_windows(data_dir, regime):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime=regime, window=20, stride=8, max_history=100)
    seq, start, stop = lc.windows(d.offsets, d.train_end, window=20, stride=8, max_history=100, regime=regime)
    np.testing.assert_array_equal(w.seq, seq)
    np.testing.assert_array_equal(w.start, start)
    np.testing.assert_array_equal(w.stop, stop)
    assert np.all(w.stop <= d.train_end[w.seq])  # no window reaches a validation or test event


def test_random_windows_are_the_core_samples_and_change_per_seed(data_dir):
    d = load_data_dir(data_dir)
    a = epoch_windows(d.offsets, d.train_end, regime="random", window=20, per_seq=2, seed=5)
    ref = lc.sample_windows(d.offsets, d.train_end, window=20, per_seq=2, seed=5)
    np.testing.assert_array_equal(a.stop, ref[2])
    b = epoch_windows(d.offsets, d.train_end, regime="random", window=20, per_seq=2, seed=6)
    assert not np.array_equal(a.stop, b.stop)
    np.testing.assert_array_equal(a.fresh_stop, a.stop)


@pytest.mark.parametrize("window", [1, 4, 20])
def test_session_windows_end_at_session_ends_and_take_each_target_once(data_dir, window):
    d = load_data_dir(data_dir)
    assert len(d.sessions) > d.n_users + 1  # the synthetic users have several sessions each
    w = epoch_windows(d.offsets, d.train_end, regime="session", window=window, sessions=d.sessions)
    assert np.all(w.stop <= d.train_end[w.seq])  # never past the training end
    # Every session's last training event ends a window (longer sessions are also cut every `window`).
    user_of = np.searchsorted(d.offsets, d.sessions[:-1], side="right") - 1
    ends = np.minimum(d.sessions[1:], d.train_end[user_of])
    has_target = ends > np.maximum(d.sessions[:-1], d.offsets[user_of] + 1)
    assert set(zip(user_of[has_target], ends[has_target])) <= set(zip(w.seq, w.stop))
    # The targets a batch marks: each training event but a user's first, once, in its own session.
    _, targets, _ = make_batch(d.items, None, w, np.arange(len(w)), window, fresh_only=False, trim=False)
    event = w.stop[:, None] + np.arange(-window, 0)[None, :]  # (W, T) event index of each target
    counted = event[targets.numpy() != 0]
    want = np.concatenate([np.arange(a + 1, b) for a, b in zip(d.offsets[:-1], d.train_end) if b > a + 1])
    np.testing.assert_array_equal(np.sort(counted), want)
    assert w.n_targets(False).sum() == len(counted)
    session_of = np.searchsorted(d.sessions, event, side="right") - 1  # (W, T)
    last_session = np.searchsorted(d.sessions, w.stop - 1, side="right") - 1  # (W,)
    assert np.all((session_of == last_session[:, None])[targets.numpy() != 0])
    with pytest.raises(ValueError, match="session offsets"):
        epoch_windows(d.offsets, d.train_end, regime="session", window=window)


def test_mixed_is_last_then_sliding():
    assert [regime_of("mixed", e, 2) for e in range(4)] == ["last", "last", "sliding", "sliding"]
    assert regime_of("sliding", 0, 2) == "sliding"


@pytest.mark.parametrize("stride", [1, 3, 8, 21])
def test_fresh_targets_count_every_training_event_once(data_dir, stride):
    d = load_data_dir(data_dir)
    window = 20
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=window, stride=stride)
    _, targets_all, _ = make_batch(d.items, None, w, np.arange(len(w)), window, fresh_only=False, trim=False)
    _inputs, targets, _ = make_batch(d.items, None, w, np.arange(len(w)), window, fresh_only=True, trim=False)
    # Rebuild which event each counted target is, per user.
    event = w.stop[:, None] + np.arange(-window, 0)[None, :]
    counted = event[targets.numpy() != 0]
    users = np.repeat(w.seq, window).reshape(len(w), window)[targets.numpy() != 0]
    covered = set(zip(users.tolist(), counted.tolist()))
    assert len(covered) == len(counted)  # no event is a target twice
    # Every event a window can predict (from the second of its span) is a target of some window.
    expected = set()
    for u in np.unique(w.seq):
        first = w.start[w.seq == u].min()
        expected |= {(int(u), e) for e in range(first + 1, int(d.train_end[u]))}
    if stride <= window:
        assert covered == expected
    else:  # stride > window leaves gaps between windows: those events are never targets
        assert covered < expected
    assert (targets != 0).sum() <= (targets_all != 0).sum()


@pytest.mark.parametrize("regime,stride", [("sliding", 1), ("sliding", 7), ("sliding", 40), ("last", 1)])
@pytest.mark.parametrize("fresh_only", [False, True])
def test_n_targets_counts_what_batches_mark(data_dir, regime, stride, fresh_only):
    # --group-by-length divides each step's loss sum by the mean of these counts per step
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime=regime, window=20, stride=stride, max_history=60)
    _, targets, _ = make_batch(d.items, None, w, np.arange(len(w)), 20, fresh_only=fresh_only, trim=False)
    np.testing.assert_array_equal(w.n_targets(fresh_only), (targets != 0).sum(1).numpy())


def test_batches_shift_by_one_and_pad_with_zero(data_dir):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=20, stride=8)
    inputs, targets, _ = make_batch(d.items, None, w, np.arange(len(w)), 20, fresh_only=False)
    real = inputs[:, :-1] != 0
    np.testing.assert_array_equal(inputs[:, 1:][real], targets[:, :-1][real])  # target j is input j + 1
    assert not torch.any((inputs == 0) & (targets != 0))  # padding input never has a target
    # A target is padding exactly where the window has no event there.
    lengths = torch.from_numpy(w.stop - w.start - 1)  # targets per window
    np.testing.assert_array_equal((targets != 0).sum(1), lengths)
    np.testing.assert_array_equal((inputs != 0).sum(1), lengths)


def test_iter_batches_yields_every_window_once_and_stops_cleanly(data_dir):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=20, stride=4)
    order = shuffled_order(len(w), seed=0, epoch=0, batch_size=16)
    batches = list(iter_batches(d.items, None, w, order, batch_size=16, window=20))
    want, _, _ = make_batch(d.items, None, w, order, 20, fresh_only=False, trim=False)
    # Each batch is trimmed to its longest window: left-pad it back to compare.
    got = torch.cat([torch.nn.functional.pad(b[0], (20 - b[0].shape[1], 0)) for b in batches])
    torch.testing.assert_close(got, want)
    it = iter_batches(d.items, None, w, order, batch_size=1, window=20, prefetch=2)
    next(it)
    it.close()  # breaking off early must not hang on a full queue


def test_trimmed_batches_give_the_same_model_outputs(data_dir):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=30, stride=5)
    idx = np.flatnonzero(w.stop - w.start < 12)[:16]  # short windows: most columns are padding
    full_in, full_t, _ = make_batch(d.items, None, w, idx, 30, fresh_only=True, trim=False)
    cut_in, cut_t, _ = make_batch(d.items, None, w, idx, 30, fresh_only=True)
    assert cut_in.shape[1] <= 11 < full_in.shape[1]
    np.testing.assert_array_equal(full_in[:, -cut_in.shape[1] :], cut_in)
    np.testing.assert_array_equal(full_t[:, -cut_t.shape[1] :], cut_t)
    assert int((full_t != 0).sum()) == int((cut_t != 0).sum())  # no target lost
    torch.manual_seed(0)
    model = SASRec(ModelConfig(n_items=d.n_items, max_len=30, dim=16, layers=2, heads=2, ffn=32)).eval()
    with torch.no_grad():
        full, cut = model(full_in), model(cut_in)
    keep = cut_in != 0
    torch.testing.assert_close(full[:, -cut_in.shape[1] :][keep], cut[keep], rtol=1e-5, atol=1e-5)


def test_group_by_length_keeps_every_window_and_cuts_padding(data_dir):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=30, stride=1)
    lengths = w.stop - w.start
    plain = shuffled_order(len(w), 0, 0, 8)
    grouped = shuffled_order(len(w), 0, 0, 8, lengths=lengths)
    assert sorted(grouped.tolist()) == list(range(len(w)))  # a permutation: every window once
    np.testing.assert_array_equal(grouped, shuffled_order(len(w), 0, 0, 8, lengths=lengths))  # seeded

    def padded_columns(order):
        full = len(order) // 8 * 8
        batches = lengths[order[:full]].reshape(-1, 8)
        return int((batches.max(1, keepdims=True) - batches).sum())

    assert padded_columns(grouped) < padded_columns(plain) / 3
    # Under data parallelism the ranks still split each grouped global batch.
    ranks = [shuffled_order(len(w), 0, 0, 4, r, 2, lengths=lengths) for r in range(2)]
    both = np.concatenate(
        [np.stack([r[k * 4 : (k + 1) * 4] for r in ranks]).ravel() for k in range(len(ranks[0]) // 4)]
    )
    np.testing.assert_array_equal(np.sort(both), np.sort(grouped[: len(both)]))
    np.testing.assert_array_equal(np.sort(both[:8]), np.sort(grouped[:8]))


def test_data_parallel_order_splits_global_batches():
    n, bs, world = 103, 8, 2
    single = shuffled_order(n, 1, 0, bs * world)
    ranks = [shuffled_order(n, 1, 0, bs, r, world) for r in range(world)]
    assert len(ranks[0]) == len(ranks[1]) == 51
    steps = n_batches(n, bs, world)
    for k in range(steps):
        both = np.concatenate([r[k * bs : (k + 1) * bs] for r in ranks])
        assert set(both) == set(single[k * bs * world : (k + 1) * bs * world]) - (
            {single[-1]} if k == steps - 1 else set()
        )


# ----------------------------------------------------------------------------- end to end


def losses(run_dir):
    """Losses of the completed epochs (a run stopped by a budget also logs its partial epoch)."""
    records = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if not r["partial"]]


def test_train_writes_a_run_dir_and_prints_only_its_path(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY)
    assert proc.stdout.strip() == str(out)
    for name in ("config.json", "ckpt.pt", "model.pt", "log.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["tokens"] > 0 and summary["train_seconds"] > 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all("NDCG@10" in r["valid"] for r in log)  # from 1


def test_same_seed_same_losses_and_resume_equals_uninterrupted(data_dir, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY)
    run(*TRAIN, "--data", str(data_dir), "--out", str(b), *TINY)
    assert losses(a) == losses(b)
    # Stop mid-way through the first epoch, then resume to the end.
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, "--max-steps", "3")
    stopped = json.loads((c / "summary.json").read_text())
    assert stopped["stop_reason"] == "max_steps" and stopped["steps"] == 3 and stopped["tokens"] > 0
    assert losses(c) == [] and (c / "model.pt").is_file()  # the partial epoch was validated and kept
    bad = run(*TRAIN, "--resume", str(c), "--threads", "0", check=False)  # checked after the saved settings
    assert bad.returncode == 2 and "--threads must be >= 1, got 0" in bad.stderr and "Traceback" not in bad.stderr
    run(*TRAIN, "--resume", str(c), "--threads", "1")  # thread count is per invocation; it changes rounding
    # Same examples, steps, dropout masks, optimizer state and reduction order: bitwise equal.
    assert losses(c) == losses(a)
    wa = torch.load(a / "model.pt", weights_only=True)["model"]
    wc = torch.load(c / "model.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.equal(wa[k], wc[k]), k
    # A different seed really changes the run (so the equalities above are not vacuous).
    d = tmp_path / "d"
    run(*TRAIN, "--data", str(data_dir), "--out", str(d), *TINY, "--seed", "1")
    assert losses(d) != losses(a)


def test_a_weight_average_is_what_a_run_keeps_and_it_resumes_bitwise(data_dir, tmp_path):
    a, c, plain = tmp_path / "a", tmp_path / "c", tmp_path / "plain"
    ema = ["--ema-decay", "0.9"]
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY, *ema, "--epochs", "1")
    ckpt = torch.load(a / "ckpt.pt", weights_only=False)
    kept = torch.load(a / "model.pt", weights_only=True)["model"]
    assert ckpt["averaged"]["updates"] == json.loads((a / "summary.json").read_text())["steps"] == 32
    for k, v in kept.items():  # model.pt holds the average (its one epoch is the best), not the trained weights
        assert torch.equal(v, ckpt["averaged"]["model"][k]), k
    assert not torch.equal(kept["pos_emb.weight"], ckpt["model"]["pos_emb.weight"])
    run(*TRAIN, "--data", str(data_dir), "--out", str(plain), *TINY, "--epochs", "1")
    assert losses(plain) == losses(a)  # the average never feeds back into training
    # stopped inside the first epoch, resumed: the average as an uninterrupted run's, bitwise
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, *ema, "--epochs", "1", "--max-steps", "5")
    run(*TRAIN, "--resume", str(c), "--threads", "1")
    resumed = torch.load(c / "ckpt.pt", weights_only=False)["averaged"]
    assert resumed["updates"] == 32
    for k, v in ckpt["averaged"]["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    bad = run(*TRAIN, "--data", str(data_dir), "--out", str(tmp_path / "bad"), "--ema-decay", "1", check=False)
    assert bad.returncode == 2 and "--ema-decay must be a number in [0, 1), got 1.0" in bad.stderr


# The opt-in item embeddings (model.py) on the tiny run's 80 items at dim 16, and a parameter each adds.
EMB_VARIANTS = {
    "lowrank": (["--item-emb", "lowrank", "--kshift-compression", "4"], "item_emb.proj"),
    "kshift-head": (["--item-emb", "kshift", "--kshift-compression", "4", "--kshift-head", "10"], "item_emb.head"),
    "kshift-weights": (["--item-emb", "kshift", "--kshift-compression", "4", "--kshift-weights"], "item_emb.weights"),
    "kshift-rows-computed": (
        ["--item-emb", "kshift", "--kshift-compression", "4", "--kshift-rows", "computed", "--kshift-weights"],
        "item_emb.weights",
    ),
    "kshift-rowwise": (
        ["--item-emb", "kshift", "--kshift-compression", "4", "--kshift-optimizer", "rowwise"],
        "item_emb.table",
    ),
    "codes": (["--item-emb", "codes", "--code-subspaces", "4", "--code-centroids", "8"], "item_emb.codes"),
    "codes-residual": (
        ["--item-emb", "codes", "--code-subspaces", "4", "--code-centroids", "8", "--code-residual", "2"],
        "item_emb.residual.table",
    ),
    "codes-residual-rowwise": (
        ["--item-emb", "codes", "--code-subspaces", "4", "--code-centroids", "8", "--code-residual", "2"]
        + ["--emb-optimizer", "rowwise"],
        "item_emb.residual.table",
    ),
    "kshift-codes": (
        ["--item-emb", "kshift", "--kshift-rows", "codes", "--kshift-k", "4", "--code-centroids", "8"],
        "item_emb.codes",
    ),
}


@pytest.mark.parametrize("variant", list(EMB_VARIANTS))
def test_item_embedding_variants_resume_equals_uninterrupted(data_dir, tmp_path, variant):
    extra, key = EMB_VARIANTS[variant]
    a, c = tmp_path / "a", tmp_path / "c"
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY, *extra)
    # Stop inside the second epoch (32 steps each), after the first one's checkpoint, then resume.
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, *extra, "--max-steps", "40")
    assert len(losses(c)) == 1
    # As frontier.py resumes a cell: the variant's flags again but not --item-emb (the saved settings
    # win); the thread count is per invocation, and it changes rounding.
    run(*TRAIN, "--resume", str(c), "--threads", "1", *extra[2:])
    assert len(losses(a)) == 2 and all(np.isfinite(losses(a))) and losses(c) == losses(a)
    # the final weights (model.pt holds the best epoch's, which may be c's validated partial epoch)
    wa, wc = (torch.load(r / "ckpt.pt", weights_only=False) for r in (a, c))
    assert wa["model_config"] == wc["model_config"] and key in wa["model"]
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wc["model"][k]), k
    mem = json.loads((a / "summary.json").read_text())["embedding_memory"]
    # smaller than a full table (the residual keeps 2 of the 16 floats of each item's row)
    assert mem["bytes_per_item"] < mem["full_total_bytes"] / (4 if variant.startswith("codes-residual") else 80)
    computed = ("lowrank", "kshift-rows-computed", "codes", "kshift-codes", "codes-residual", "codes-residual-rowwise")
    assert (mem["rows_bytes"] == 0) == (variant in computed)
    assert (mem["codes_bytes"] > 0) == ("codes" in variant)


@pytest.mark.parametrize("assignment", ["quantile", "pq"])
def test_code_runs_keep_the_codes_of_the_training_events(data_dir, tmp_path, assignment):
    out = tmp_path / "run"
    proc = run(
        *TRAIN,
        "--data",
        str(data_dir),
        "--out",
        str(out),
        *TINY,
        "--epochs",
        "1",
        "--item-emb",
        "codes",
        "--code-subspaces",
        "4",
        "--code-centroids",
        "300",
        "--kshift-seed",
        "3",
        "--code-oversample",
        "2",
        "--code-assignment",
        assignment,
    )
    assert f"codes ({assignment}): 4 sub-spaces x 300 centroids assigned from the training events in" in proc.stderr
    assert "bytes per item to train" in proc.stderr and "codes 0.00 MiB" in proc.stderr
    data = load_data_dir(data_dir)
    want = item_codes(
        training_events(data), data.n_items, subspaces=4, centroids=300, seed=3, oversample=2, assignment=assignment
    )
    model = load_model(out)
    assert model.cfg.code_subspaces == 4 and model.item_emb.codes.dtype == torch.int16
    np.testing.assert_array_equal(saved_codes(model.state_dict()), want.codes)
    assert not np.array_equal(want.codes, hashed_codes(data.n_items, 4, 300, 3))  # not the placeholder


def test_bf16_on_cpu_trains_reproducibly_and_close_to_fp32(data_dir, tmp_path):
    runs = {name: tmp_path / name for name in ("fp32", "bf16", "bf16-again")}
    for name, out in runs.items():
        run(*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY, "--precision", name.split("-")[0])
    assert json.loads((runs["bf16"] / "summary.json").read_text())["precision"] == "bf16"
    assert losses(runs["bf16"]) == losses(runs["bf16-again"])
    assert losses(runs["bf16"]) != losses(runs["fp32"])  # bf16 really ran
    np.testing.assert_allclose(losses(runs["bf16"]), losses(runs["fp32"]), rtol=1e-2)


@pytest.mark.parametrize(
    "extra",
    [
        ["--regime", "mixed", "--mixed-epochs", "1", "--targets", "fresh", "--group-by-length"],
        ["--regime", "random", "--per-seq", "2", "--loss", "sampled", "--negatives", "16", "--sampler", "popularity"],
        [
            "--regime",
            "last",
            "--loss",
            "chunked",
            "--loss-chunk",
            "7",
            "--item-emb",
            "kshift",
            "--kshift-compression",
            "4",
            "--valid-sample",
            "7",
        ],
        ["--regime", "session", "--group-by-length"],
    ],
)
def test_other_regimes_losses_and_embeddings_train(data_dir, tmp_path, extra):
    out = tmp_path / "run"
    run(*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY, *extra)
    assert all(np.isfinite(losses(out)))


@pytest.mark.parametrize("extra, rtol", [([], 2e-2), (["--group-by-length", "--stride", "2", "--epochs", "1"], 1.5e-4)])
def test_two_process_data_parallel_matches_one_process(data_dir, tmp_path, extra, rtol):
    one, two = tmp_path / "one", tmp_path / "two"
    common = [*TINY, "--dropout", "0", "--data", str(data_dir), *extra]
    common[common.index("--batch-size") + 1] = "16"
    run(*TRAIN, *common, "--out", str(one), "--batch-size", "32")
    run(
        *torchrun_train(),
        *common,
        "--out",
        str(two),
    )
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    # The same examples per step and the same loss weights: equal up to float noise and the one
    # window per epoch that may be dropped to split evenly (compare loosely but meaningfully). The
    # grouped run's first epoch agreed to 4e-5, and to only 4e-4 when the ranks weighed their
    # targets by their own count instead of the epoch's mean per step: the tolerance tells them apart.
    np.testing.assert_allclose(losses(two), losses(one), rtol=rtol)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stride", "0"], "--stride must be >= 1, got 0"),
        (["--valid-sample", "0"], "--valid-sample must be >= 1, got 0"),
        (["--stride", str(2**70)], "--stride must be <= 1,099,511,627,776"),  # would overflow in NumPy
        (["--window", str(10**11)], "--window must be <= 1,048,576"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--threads", "-1"], "--threads must be >= 1, got -1"),
        (["--item-emb", "kshift", "--kshift-seed", "-1"], "--kshift-seed must be >= 0, got -1"),
        (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1, got 0"),
        (["--lr", "nan"], "--lr must be a finite number at least 0"),
        (["--weight-decay", "-1"], "--weight-decay must be a finite number at least 0"),
        (["--nope"], "unrecognized arguments: --nope"),
        (
            ["--regime", "random", "--targets", "fresh"],
            "--targets fresh applies to --regime last, sliding or mixed: random",
        ),
        (["--regime", "session", "--targets", "fresh"], "session windows already take each target once"),
        (["--heads", "3"], "--dim (64) must be a multiple of --heads (3)"),
        (["--layers", str(10**8)], "--layers must be <= 1,024"),
        (["--loss", "sampled", "--negatives", "81"], "--negatives (81) must be at most the 80 items"),
        (["--data", "/nonexistent/data"], "/nonexistent/data"),
        (["--resume", "/nonexistent/run"], "cannot resume"),
        (["--resume", "/nonexistent/run", "--data", "/some/data"], "drop --data and --out"),
        (["--regime", "diagonal"], "invalid choice"),
        (["--kshift-head", "5"], "--kshift-head applies to --item-emb kshift only, not --item-emb full"),
        (["--item-emb", "lowrank", "--kshift-weights"], "--kshift-weights applies to --item-emb kshift only"),
        (["--kshift-rows", "computed"], "--kshift-rows computed applies to --item-emb kshift only"),
        (["--kshift-optimizer", "rowwise"], "--emb-optimizer rowwise applies to --item-emb kshift or to --item-emb"),
        (
            ["--item-emb", "codes", "--emb-optimizer", "rowwise"],
            "--emb-optimizer rowwise applies to --item-emb kshift or to --item-emb codes with --code-residual above 0",
        ),
        (["--item-emb", "kshift", "--kshift-head", "-1"], "--kshift-head must be >= 0, got -1"),
        (["--item-emb", "kshift", "--kshift-head", "80"], "--kshift-head (80) must be below the 80 items"),
        (
            ["--item-emb", "lowrank", "--kshift-compression", "65"],
            "--item-emb lowrank needs --emb-compression (65) at most --dim (64): its width --dim // --emb-compression",
        ),
        (
            ["--item-emb", "kshift", "--emb-compression", "0"],
            "--emb-compression must be a finite number above 0, got 0",
        ),
        (
            ["--item-emb", "kshift", "--kshift-compression", "nan"],
            "--emb-compression must be a finite number above 0, got nan",
        ),
        (["--code-centroids", "16"], "--code-centroids 16 applies to --item-emb codes or --kshift-rows codes only"),
        (
            ["--item-emb", "kshift", "--code-subspaces", "8"],
            "--code-subspaces 8 applies to --item-emb codes or --kshift-rows codes only, not --item-emb kshift",
        ),
        (["--item-emb", "codes", "--code-subspaces", "3"], "--code-subspaces (3) must divide --dim (64)"),
        (["--item-emb", "codes", "--code-centroids", "65537"], "--code-centroids must be <= 65,536, got 65,537"),
        (["--item-emb", "codes", "--code-centroids", "0"], "--code-centroids must be >= 1, got 0"),
        (["--item-emb", "codes", "--code-oversample", "-1"], "--code-oversample must be >= 0, got -1"),
        (["--item-emb", "codes", "--kshift-rows", "codes"], "--kshift-rows codes applies to --item-emb kshift only"),
        (
            ["--item-emb", "kshift", "--kshift-rows", "codes", "--code-subspaces", "4"],
            "--kshift-rows codes reads one code per shift: --code-subspaces (4) must equal --kshift-k (8)",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_sentence(data_dir, tmp_path, argv, message):
    argv = list(argv)
    if "--data" not in argv and "--resume" not in argv:
        argv += ["--data", str(data_dir)]
    out = [] if "--resume" in argv else ["--out", str(tmp_path / "run")]
    proc = run(*TRAIN, *out, *argv, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_run_dir_without_weights_is_started_over_and_one_with_weights_is_kept(data_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()  # what a run that failed in its first epoch leaves: its settings only
    (out / "config.json").write_text("{}")
    run(*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY)
    assert json.loads((out / "config.json").read_text())["data"]
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY, check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    (tmp_path / "file").write_text("x")
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(tmp_path / "file"), *TINY, check=False)
    assert proc.returncode == 2 and "is a file" in proc.stderr
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(tmp_path / "file" / "run"), *TINY, check=False)
    assert proc.returncode == 2 and "file is not a directory" in proc.stderr and "Traceback" not in proc.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(other), *TINY, check=False)
    assert proc.returncode == 2 and "not a run dir" in proc.stderr and (other / "notes.txt").read_text() == "mine"


def test_resume_of_a_run_without_a_checkpoint_starts_it_over(data_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY)
    b.mkdir()  # what a run killed inside its first epoch leaves: its settings only
    (b / "config.json").write_text((a / "config.json").read_text())
    (b / "log.jsonl").write_text('{"epoch": 0, "partial": true, "loss": 1.0}\n')
    proc = run(*TRAIN, "--resume", str(b), "--threads", "1")
    assert "starting it over" in proc.stderr
    assert losses(b) == losses(a)
    (b / "ckpt.pt").write_bytes(b"not a checkpoint")
    proc = run(*TRAIN, "--resume", str(b), check=False)
    assert proc.returncode == 2 and "is not a readable checkpoint" in proc.stderr
    torch.save({"config": {}}, b / "ckpt.pt")
    proc = run(*TRAIN, "--resume", str(b), check=False)
    assert proc.returncode == 2 and "is not a checkpoint of train.py" in proc.stderr
    # settings saved in a run dir are checked like flags, and a dir with foreign files is not taken over
    c = tmp_path / "c"
    c.mkdir()
    (c / "config.json").write_text(json.dumps({**json.loads((a / "config.json").read_text()), "dim": "16"}))
    proc = run(*TRAIN, "--resume", str(c), check=False)
    assert proc.returncode == 2 and "--dim must be an integer" in proc.stderr and "Traceback" not in proc.stderr
    (c / "config.json").write_text((a / "config.json").read_text())
    (c / "notes.txt").write_text("mine")
    proc = run(*TRAIN, "--resume", str(c), check=False)
    assert proc.returncode == 2 and "holds notes.txt" in proc.stderr and (c / "notes.txt").read_text() == "mine"


def test_resume_refuses_a_data_dir_prepared_again_with_other_items(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    prepare_synthetic(data, users=60, items=80, seed=3)
    run(*TRAIN, "--data", str(data), "--out", str(out), *TINY, "--max-steps", "2")
    shutil.rmtree(data)
    prepare_synthetic(data, users=60, items=90, seed=3)
    proc = run(*TRAIN, "--resume", str(out), check=False)
    assert proc.returncode == 2 and "trained on 80 items" in proc.stderr


def test_data_without_validation_targets_is_refused(data_dir, tmp_path):
    d = load_data_dir(data_dir)
    users, _ = d.eval_targets("valid")
    assert len(users) > 0
    novalid = tmp_path / "novalid"
    shutil.copytree(data_dir, novalid)
    split = dict(np.load(novalid / "split.npz"))
    split["train_end"] = split["valid_end"]  # every validation event becomes training
    np.savez(novalid / "split.npz", **split)
    manifest = json.loads((novalid / "manifest.json").read_text())
    manifest["arrays"]["train_end"]["sha256"] = _array_sha256(split["train_end"])
    (novalid / "manifest.json").write_text(json.dumps(manifest))
    proc = run(*TRAIN, "--data", str(novalid), "--out", str(tmp_path / "run"), *TINY, check=False)
    assert proc.returncode == 2 and "has no validation targets" in proc.stderr


def test_sigterm_stops_with_a_checkpoint_and_resume_equals_uninterrupted(data_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    long_run = [*TINY, "--epochs", "100", "--patience", "0"]
    proc = subprocess.Popen(
        [*TRAIN, "--data", str(data_dir), "--out", str(b), *long_run],
        cwd=ROOT,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for line in proc.stderr:  # signal as soon as the first epoch is done
        if line.startswith("epoch 1:"):
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert stdout == "" and "(SIGTERM)" not in stderr and "continue with --resume" in stderr
    summary = json.loads((b / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and (b / "ckpt.pt").is_file()
    epochs = summary["epochs"] + 1  # the epoch it stopped in, finished by the resumed run
    run(*TRAIN, "--resume", str(b), "--epochs", str(epochs), "--threads", "1")  # threads are per invocation
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *long_run, "--epochs", str(epochs))
    assert losses(b) == losses(a)


def test_epochs_count_from_1_on_screen_in_the_files_and_on_resume(data_dir, tmp_path):
    """The epoch a line on screen names is the one log.jsonl, summary.json and the resume message name."""
    out = tmp_path / "run"
    first = run(*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY, "--max-steps", "1")
    assert "stopped in epoch 1 after batch 1" in first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_epoch"] == 1 and summary["best_epoch"] == 1  # the partial first epoch, validated
    resumed = run(*TRAIN, "--resume", str(out), "--threads", "1")
    assert f"resuming {out} in epoch 1 after its batch 1" in resumed.stderr, resumed.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    on_screen = [
        int(line.split(":")[0].removeprefix("epoch "))
        for line in resumed.stderr.splitlines()
        if line.startswith("epoch ")
    ]
    assert [r["epoch"] for r in log] == [1, *on_screen] == [1, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    best = max(log[1:], key=lambda r: r["valid"]["NDCG@10"])
    assert summary["best_epoch"] == best["epoch"] and summary["epochs"] == 2


def test_a_finished_run_exits_0_when_the_next_stage_has_gone(data_dir, tmp_path):
    """`train.py | eval.py` where eval.py fails at once: the run is done and written, so train.py
    succeeds instead of ending on `[Errno 32] Broken pipe`."""
    out = tmp_path / "run"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before train.py prints its run dir
    try:
        proc = subprocess.run(
            [*TRAIN, "--data", str(data_dir), "--out", str(out), *TINY, "--epochs", "1"],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Broken pipe" not in proc.stderr and (out / "summary.json").is_file()


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_a_dir_killed_before_its_first_checkpoint_is_resumed_or_rerun(data_dir, tmp_path):
    """model.pt is written before the first ckpt.pt; a kill between them leaves
    {config.json, log.jsonl, model.pt}, which --resume and the same command both start over."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    one = [*TINY, "--epochs", "1"]
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *one)
    for r in (b, c):
        run(*TRAIN, "--data", str(data_dir), "--out", str(r), *one)
        for name in ("ckpt.pt", "summary.json"):
            (r / name).unlink()
    proc = run(*TRAIN, "--resume", str(b))
    assert "starting it over" in proc.stderr
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *one)  # the same command again
    for r in (b, c):
        assert losses(r) == losses(a) and (r / "summary.json").is_file()
        assert_same_weights(a / "model.pt", r / "model.pt")
    # a temporary file that a killed write left does not make the dir foreign
    d = tmp_path / "d"
    d.mkdir()
    (d / ".config.json.tmp-1-x").write_text("{")  # pid 1: alive, so it is kept, but it is a run's file
    run(*TRAIN, "--data", str(data_dir), "--out", str(d), *one)
    assert (d / "summary.json").is_file()


def test_resume_restores_the_thread_count_and_warns_when_it_is_overridden(data_dir, tmp_path):
    """`train.py --resume R` alone (as the README says) gives the uninterrupted run's
    bits: the thread count the run computed with is restored (here 1, on a machine with more)."""
    a, c = tmp_path / "a", tmp_path / "c"
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY)
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, "--max-steps", "40")
    proc = run(*TRAIN, "--resume", str(c))
    assert "warning" not in proc.stderr
    wa, wc = (torch.load(r / "ckpt.pt", weights_only=False)["model"] for r in (a, c))
    for k in wa:
        assert torch.equal(wa[k], wc[k]), k
    assert losses(c) == losses(a) and json.loads((c / "config.json").read_text())["threads_used"] == 1
    shutil.rmtree(c)
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, "--max-steps", "40")
    proc = run(*TRAIN, "--resume", str(c), "--threads", "2")
    assert "trained with 1 threads and resumes with --threads 2" in proc.stderr and "bitwise" in proc.stderr


def test_resume_cuts_the_log_back_to_the_checkpoint(data_dir, tmp_path):
    """a kill after an epoch's log line and before its checkpoint made the resumed run
    log that epoch twice ([1, 2, 2]); the log is cut back to the checkpoint's lines, and the reader
    counts each epoch once."""
    a, c = tmp_path / "a", tmp_path / "c"
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY)
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, "--epochs", "1")
    ckpt_one = (c / "ckpt.pt").read_bytes()
    run(*TRAIN, "--resume", str(c), "--epochs", "2")
    assert [json.loads(x)["epoch"] for x in (c / "log.jsonl").read_text().splitlines()] == [1, 2]
    # what a kill right after epoch 2's log line leaves: its line, the checkpoint of epoch 1
    (c / "ckpt.pt").write_bytes(ckpt_one)
    (c / "summary.json").unlink()
    with open(c / "log.jsonl", "a") as f:
        f.write('{"epoch": 2, "partial": fal')  # and a line cut short
    run(*TRAIN, "--resume", str(c), "--epochs", "2")
    assert [json.loads(x)["epoch"] for x in (c / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert losses(c) == losses(a)
    from longrec_core.rundir import RunDir

    (c / "log.jsonl").write_text((c / "log.jsonl").read_text() + (c / "log.jsonl").read_text().splitlines()[1] + "\n")
    assert [r["epoch"] for r in RunDir(c).read_log()] == [1, 2]


def test_a_stride_larger_than_the_window_is_warned_about(data_dir, tmp_path):
    """--stride larger than --window skipped events without a word."""
    args = [*TINY, "--epochs", "1", "--window", "4"]
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(tmp_path / "a"), *args, "--stride", "7")
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: --stride 7 is larger than --window 4: the 3 events between consecutive windows of a user are "
        "never a target; use a --stride of at most --window to train on every event"
    ], proc.stderr
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(tmp_path / "b"), *args, "--stride", "4")
    assert "warning" not in proc.stderr
