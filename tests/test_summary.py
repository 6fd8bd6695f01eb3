"""The history summary (train.py --summary-events/--summary-tokens): the events before a window,
pooled into extra input tokens. It reads only events before its window (so never a validation or
test target), predicting with and without it is selectable, and a run with it resumes bitwise."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec_core.datadir import load_data_dir
from longrec_core.examples import epoch_windows, iter_batches, window_prefix
from longrec_core.metrics import _histories
from longrec_core.model import ModelConfig, SASRec
from longrec_core.prepare import prepare_synthetic

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
EVAL = [sys.executable, str(ROOT / "scripts" / "eval.py")]
TINY = [
    *("--epochs", "2", "--window", "10", "--stride", "5", "--dim", "16", "--heads", "2", "--ffn", "32"),
    *("--batch-size", "32", "--warmup-steps", "2", "--threads", "1"),
]
SUMMARY = ["--summary-events", "12", "--summary-tokens", "3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("summary") / "data"
    prepare_synthetic(path, users=60, items=80, seed=5)
    return path


def run(*argv, check=True):
    proc = subprocess.run([*argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def test_window_prefix_is_the_events_just_before_each_window(data_dir):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=10, stride=5)
    prefix = window_prefix(d.items, d.offsets, w.seq, w.start, 12).numpy()
    assert prefix.shape == (len(w), 12)
    for i in range(len(w)):
        lo = max(int(d.offsets[w.seq[i]]), int(w.start[i]) - 12)
        want = np.asarray(d.items[lo : w.start[i]])
        np.testing.assert_array_equal(prefix[i, 12 - len(want) :], want)
        assert not prefix[i, : 12 - len(want)].any()  # left padding
    assert (prefix != 0).any()  # sliding windows of long histories do have events before them


def test_the_summary_never_reads_its_window_or_anything_after_it(data_dir):
    """Changing every event at or after a window's start (its inputs, its targets, the user's
    validation and test targets) leaves the window's prefix, and so its summary, unchanged."""
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=10, stride=5)
    items = np.asarray(d.items).copy()
    want = window_prefix(items, d.offsets, w.seq, w.start, 12)
    for i in range(0, len(w), 7):
        changed = items.copy()
        changed[w.start[i] : d.offsets[w.seq[i] + 1]] = 79  # the window, the rest of training, valid and test
        got = window_prefix(changed, d.offsets, w.seq[i : i + 1], w.start[i : i + 1], 12)
        assert torch.equal(got[0], want[i])
    # at prediction: the summary of a test history never holds the test target or the history itself
    users, end = (np.asarray(a) for a in d.eval_targets("test"))
    _, _, _, prefix = _histories(d, users, end, 10, False, 12, torch.device("cpu"))
    changed = items.copy()
    for u, e in zip(users, end):
        changed[max(d.offsets[u], e - 10) : e + 1] = 79
    _, _, _, prefix_changed = _histories(
        type("D", (), {"items": changed, "offsets": d.offsets})(), users, end, 10, False, 12, torch.device("cpu")
    )
    assert torch.equal(prefix, prefix_changed) and (prefix != 0).any()


def test_iter_batches_yield_the_prefix_only_when_asked(data_dir):
    d = load_data_dir(data_dir)
    w = epoch_windows(d.offsets, d.train_end, regime="sliding", window=10, stride=5)
    order = np.arange(len(w))
    plain = next(iter(iter_batches(d.items, None, w, order, batch_size=16, window=10)))
    with_prefix = next(
        iter(iter_batches(d.items, None, w, order, batch_size=16, window=10, offsets=d.offsets, summary_events=12))
    )
    assert plain[3] is None
    assert torch.equal(with_prefix[3], window_prefix(d.items, d.offsets, w.seq[:16], w.start[:16], 12))
    for a, b in zip(plain[:2], with_prefix[:2]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_an_empty_prefix_predicts_as_the_window_alone_and_events_change_it(pool):
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=50, max_len=8, dim=16, heads=2, summary_tokens=2, summary_events=6, summary_pool=pool)
    model = SASRec(cfg).eval()
    items = torch.randint(1, 51, (4, 8))
    alone = model(items)
    empty = model(items, prefix=torch.zeros(4, 6, dtype=torch.long))
    torch.testing.assert_close(empty, alone)  # summary tokens with no event are never attended to
    prefix = torch.randint(1, 51, (4, 6))
    prefix[0] = 0
    summarized = model(items, prefix=prefix)
    assert summarized.shape == alone.shape
    torch.testing.assert_close(summarized[0], alone[0])
    assert not torch.allclose(summarized[1:], alone[1:])
    with pytest.raises(ValueError, match="prefix must hold 6 events"):
        model(items, prefix=prefix[:, :5])


def test_the_attention_summary_weighs_only_real_events_and_learns():
    """Padding in the prefix gets no weight (adding or removing padding changes nothing), and the
    learned queries get a gradient from the loss."""
    torch.manual_seed(1)
    cfg = ModelConfig(n_items=50, max_len=8, dim=16, heads=2, summary_tokens=2, summary_events=6)
    model = SASRec(replace(cfg, summary_pool="attention")).eval()
    vecs = torch.randn(3, 6, 16)
    present = torch.tensor([[False] * 3 + [True] * 3, [True] * 6, [False] * 6])
    tokens, real = model.summary_attention(vecs, present)
    changed = vecs.clone()
    changed[0, :3] = 100.0  # padding positions of row 0: whatever their vectors, they weigh nothing
    torch.testing.assert_close(model.summary_attention(changed, present)[0][0], tokens[0])
    assert real.tolist() == [[True, True], [True, True], [False, False]] and not tokens[2].any()
    items = torch.randint(1, 51, (3, 8))
    model(items, prefix=torch.randint(1, 51, (3, 6))).pow(2).sum().backward()
    assert model.summary_attention.queries.grad.abs().sum() > 0 and model.summary_attention.key.weight.grad.any()


def test_a_model_without_a_summary_refuses_a_prefix():
    model = SASRec(ModelConfig(n_items=50, max_len=8, dim=16, heads=2))
    with pytest.raises(ValueError, match="no history summary"):
        model(torch.ones(2, 8, dtype=torch.long), prefix=torch.ones(2, 4, dtype=torch.long))


@pytest.mark.parametrize(
    "tokens, events, pool",
    [(0, 4, "mean"), (3, 0, "mean"), (3, 10, "mean"), (-1, 4, "mean"), (0, 0, "attention"), (2, 4, "max")],
    ids=["no-tokens", "no-events", "not-a-multiple", "negative", "pool-without-summary", "unknown-pool"],
)
def test_model_config_refuses_bad_summary_settings(tokens, events, pool):
    with pytest.raises(ValueError, match="summary"):
        ModelConfig(n_items=5, max_len=4, summary_tokens=tokens, summary_events=events, summary_pool=pool)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--summary-events", "12"], "--summary-events (12) must be a multiple of --summary-tokens (0)"),
        (["--summary-events", "10", "--summary-tokens", "3"], "must be a multiple of --summary-tokens (3)"),
        (["--summary-tokens", "-1"], "--summary-tokens must be >= 0"),
        (["--summary-pool", "attention"], "--summary-pool attention applies to a history summary only"),
    ],
)
def test_bad_summary_flags_exit_2_with_one_sentence(data_dir, tmp_path, argv, message):
    proc = run(*TRAIN, "--data", str(data_dir), "--out", str(tmp_path / "r"), *TINY, *argv, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_a_run_with_a_summary_records_it_resumes_bitwise_and_predicts_with_or_without_it(data_dir, tmp_path, pool):
    a, c = tmp_path / "a", tmp_path / "c"
    summary = [*SUMMARY, "--summary-pool", pool]
    run(*TRAIN, "--data", str(data_dir), "--out", str(a), *TINY, *summary)
    config = json.loads((a / "config.json").read_text())
    assert (config["model"]["summary_events"], config["model"]["summary_tokens"]) == (12, 3)
    assert config["model"]["summary_pool"] == pool
    # stopped inside the second epoch, then resumed: the same losses and weights as the run in one go
    steps_per_epoch = torch.load(a / "ckpt.pt", weights_only=False)["state"]["step"] // 2
    run(*TRAIN, "--data", str(data_dir), "--out", str(c), *TINY, *summary, "--max-steps", str(steps_per_epoch + 3))
    run(*TRAIN, "--resume", str(c), "--threads", "1")
    records = ([json.loads(x) for x in (r / "log.jsonl").read_text().splitlines()] for r in (a, c))
    la, lc_ = ([r["loss"] for r in log if not r["partial"]] for log in records)  # a budget stop logs its part
    assert len(la) == 2 and la == lc_
    wa, wc = (torch.load(r / "ckpt.pt", weights_only=False)["model"] for r in (a, c))
    assert "summary_pos.weight" in wa and ("summary_attention.queries" in wa) == (pool == "attention")
    for k in wa:
        assert torch.equal(wa[k], wc[k]), k
    # prediction with the summary (the default) and from the window alone, each recorded
    with_it, without = tmp_path / "with.json", tmp_path / "without.json"
    run(*EVAL, "--run", str(a), "--out", str(with_it), "--bootstrap", "0")
    run(*EVAL, "--run", str(a), "--out", str(without), "--bootstrap", "0", "--history-summary", "no")
    m_with, m_without = (json.loads(p.read_text()) for p in (with_it, without))
    assert (m_with["summary_events"], m_without["summary_events"]) == (12, 0)
    r_with, r_without = (np.load(p.with_suffix(".ranks.npz"))["ranks"] for p in (with_it, without))
    assert not np.array_equal(r_with, r_without)  # the summary is really read at prediction
