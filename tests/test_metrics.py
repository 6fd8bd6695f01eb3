"""Full-catalogue ranking and metrics against hand-computed values and NumPy references.

Scores in the references are exact: embeddings are small integers, so float32 dot
products are integers and ties are real ties on every backend.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from longrec_core.metrics import (
    KS,
    bootstrap_ci,
    evaluate,
    metric_names,
    metrics_from_ranks,
    paired_comparison,
    per_user,
    rank_of_targets,
)

# ----------------------------------------------------------------------------------------
# references


def ref_ranks(q: np.ndarray, table: np.ndarray, targets: np.ndarray, seen: list[list[int]] | None = None) -> np.ndarray:
    """1 + #{items n in 1..N, n != target, not seen: score_n >= score_target}, by brute force."""
    scores = q.astype(np.int64) @ table[1:].astype(np.int64).T  # (M, N) exact
    out = []
    for m, t in enumerate(targets):
        competitor = np.ones(scores.shape[1], dtype=bool)
        if seen is not None:
            competitor[np.asarray(seen[m], dtype=np.int64) - 1] = False
        competitor[t - 1] = False
        out.append(1 + int((scores[m][competitor] >= scores[m, t - 1]).sum()))
    return np.array(out)


def ref_metrics(ranks: np.ndarray, ks=KS) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"HR@{k}"] = float(np.mean([r <= k for r in ranks]))
        out[f"NDCG@{k}"] = float(np.mean([1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]))
        out[f"MRR@{k}"] = float(np.mean([1 / r if r <= k else 0.0 for r in ranks]))
    out["MRR"] = float(np.mean([1 / r for r in ranks]))
    return out


def int_case(seed: int, m: int = 12, n: int = 40, d: int = 3, spread: int = 2):
    """Integer-valued queries and item table (row 0 = padding, zeros) with many ties."""
    g = np.random.default_rng(seed)
    table = g.integers(-spread, spread + 1, size=(n + 1, d))
    table[0] = 0
    q = g.integers(-spread, spread + 1, size=(m, d))
    targets = g.integers(1, n + 1, size=m)
    return q, table, targets


def ranks_t(q, table, targets, **kw) -> np.ndarray:
    t = torch.tensor(table, dtype=torch.float32)
    return rank_of_targets(torch.tensor(q, dtype=torch.float32), torch.tensor(targets), t, len(table) - 1, **kw).numpy()


# ----------------------------------------------------------------------------------------
# metrics


def test_metrics_hand_computed():
    got = metrics_from_ranks(np.array([1, 3, 12, 150]))
    assert list(got) == metric_names(KS)
    assert got["HR@1"] == 0.25 and got["HR@5"] == 0.5 and got["HR@10"] == 0.5 and got["HR@20"] == 0.75
    assert got["HR@100"] == 0.75
    assert got["NDCG@1"] == 0.25
    assert got["NDCG@5"] == pytest.approx((1 + 0.5) / 4)  # rank 3: 1/log2(4) = 0.5
    assert got["NDCG@20"] == pytest.approx((1 + 0.5 + 0.27023815442731974) / 4)  # rank 12: 1/log2(13)
    assert got["MRR@5"] == pytest.approx(1 / 3)
    assert got["MRR@20"] == pytest.approx(17 / 48)
    assert got["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 150) / 4)


def test_metrics_match_reference():
    ranks = np.random.default_rng(0).integers(1, 300, size=500)
    got, want = metrics_from_ranks(ranks, ks=(1, 3, 10, 250)), ref_metrics(ranks, ks=(1, 3, 10, 250))
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.parametrize("bad", [np.array([], dtype=np.int64), np.array([0, 1]), np.array([1.5, 2.0])])
def test_metrics_reject_bad_ranks(bad):
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks(bad)


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="unknown metric"):
        per_user(np.array([1, 2]), "AUC@10")


# ----------------------------------------------------------------------------------------
# ranking


@pytest.mark.parametrize("seed", range(5))
def test_rank_matches_brute_force(seed):
    q, table, targets = int_case(seed)
    np.testing.assert_array_equal(ranks_t(q, table, targets), ref_ranks(q, table, targets))


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 39, 40, 1000])
def test_chunked_equals_unchunked(chunk):
    q, table, targets = int_case(7)  # exact integer scores, many ties across chunk borders
    np.testing.assert_array_equal(ranks_t(q, table, targets, item_chunk=chunk), ranks_t(q, table, targets))
    g = torch.Generator().manual_seed(0)  # random float scores
    qf, tf = torch.randn(20, 8, generator=g), torch.randn(101, 8, generator=g)
    tgt = torch.randint(1, 101, (20,), generator=g)
    whole = rank_of_targets(qf, tgt, tf, 100, item_chunk=100)
    np.testing.assert_array_equal(rank_of_targets(qf, tgt, tf, 100, item_chunk=chunk).numpy(), whole.numpy())


def test_ties_count_against_the_model():
    table = np.zeros((6, 2), dtype=np.int64)
    table[1:] = [[1, 0], [1, 0], [2, 0], [0, 0], [1, 0]]  # items 1, 2, 5 identical
    q = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    targets = np.array([1, 3, 4, 2])
    # item 1: item 3 beats it, items 2 and 5 tie -> 4; item 3 is the best -> 1;
    # item 4 scores 0, everyone else >= 0 -> 5; query [0, 1] scores every item 0 -> 5.
    for chunk in (1, 2, 5):
        np.testing.assert_array_equal(ranks_t(q, table, targets, item_chunk=chunk), [4, 1, 5, 5])


def test_padding_never_ranked():
    q, table, targets = int_case(3)
    table[0] = 100  # padding row would beat everything if it were scored
    np.testing.assert_array_equal(ranks_t(q, table, targets), ref_ranks(q, table, targets))
    with pytest.raises(ValueError, match=r"1\.\.40"):
        ranks_t(q, table, np.where(np.arange(len(targets)) == 0, 0, targets))
    with pytest.raises(ValueError, match=r"1\.\.40"):
        ranks_t(q, table, np.full(len(targets), 41))


def test_nan_scores_count_against_the_model():
    q, table, targets = int_case(4, m=3)
    qf = torch.tensor(q, dtype=torch.float32)
    qf[1] = float("nan")
    r = rank_of_targets(qf, torch.tensor(targets), torch.tensor(table, dtype=torch.float32), 40).numpy()
    assert r[1] == 40  # worst possible
    np.testing.assert_array_equal(r[[0, 2]], ref_ranks(q, table, targets)[[0, 2]])


def test_callable_item_vectors_equal_table():
    q, table, targets = int_case(5)
    t = torch.tensor(table, dtype=torch.float32)
    calls = []

    def fn(ids: torch.Tensor) -> torch.Tensor:
        calls.append(ids)
        return t[ids]

    got = rank_of_targets(torch.tensor(q, dtype=torch.float32), torch.tensor(targets), fn, 40, item_chunk=9)
    np.testing.assert_array_equal(got.numpy(), ref_ranks(q, table, targets))
    assert len(calls) == 5 and all(int(c.min()) >= 1 for c in calls)  # ceil(40 / 9) chunks, never id 0


def test_filter_seen():
    q, table, targets = int_case(6)
    g = np.random.default_rng(1)
    seen = [list(g.integers(0, 41, size=g.integers(0, 9))) for _ in targets]  # 0 = padding
    seen[0].append(int(targets[0]))  # the target itself in the history: still ranked
    real = [[s for s in row if s > 0] for row in seen]
    want = ref_ranks(q, table, targets, seen=real)
    width = max(len(r) for r in seen)
    padded = torch.tensor([[0] * (width - len(r)) + r for r in seen])
    rows = torch.tensor([i for i, r in enumerate(seen) for _ in r])
    items = torch.tensor([s for r in seen for s in r])
    for chunk in (4, 40):
        np.testing.assert_array_equal(ranks_t(q, table, targets, seen=padded, item_chunk=chunk), want)
        np.testing.assert_array_equal(ranks_t(q, table, targets, seen=(rows, items), item_chunk=chunk), want)
    assert (want <= ref_ranks(q, table, targets)).all()
    with pytest.raises(ValueError, match="rows"):
        ranks_t(q, table, targets, seen=padded[:3])


# ----------------------------------------------------------------------------------------
# bootstrap and paired comparison


def test_bootstrap_ci_matches_naive_and_is_deterministic():
    ranks = np.random.default_rng(2).integers(1, 60, size=300)
    ci = bootstrap_ci(ranks, n_boot=400, seed=3)
    point = metrics_from_ranks(ranks)
    assert ci.keys() == point.keys()
    for k, (lo, hi) in ci.items():
        assert lo <= point[k] <= hi, k
    assert bootstrap_ci(ranks, n_boot=400, seed=3) == ci
    assert bootstrap_ci(ranks, n_boot=400, seed=4) != ci
    # naive reference: the same draws, one resample at a time
    idx = np.random.default_rng(3).integers(0, 300, size=(400, 300))
    boot = np.array([ref_metrics(ranks[i], ks=(10,))["NDCG@10"] for i in idx])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert ci["NDCG@10"] == pytest.approx((lo, hi), abs=1e-12)
    assert ci["HR@10"][1] - ci["HR@10"][0] > 0.05  # a real interval, not a point


def test_bootstrap_blocks_for_many_users():
    ranks = np.random.default_rng(0).integers(1, 1000, size=300_000)  # > 1 block of draws
    ci = bootstrap_ci(ranks, ks=(10,), n_boot=30, seed=0)
    point = metrics_from_ranks(ranks, ks=(10,))
    assert all(lo <= point[k] <= hi for k, (lo, hi) in ci.items())
    assert ci == bootstrap_ci(ranks, ks=(10,), n_boot=30, seed=0)


def test_paired_identical_runs():
    ranks = np.random.default_rng(5).integers(1, 100, size=200)
    res = paired_comparison(ranks, ranks.copy(), "NDCG@10", n_boot=500)
    assert res["diff"] == 0 and res["ci"] == (0.0, 0.0) and res["p_value"] == 1.0
    assert res["n_users"] == 200 and res["mean_a"] == res["mean_b"]


def test_paired_clearly_different_runs():
    g = np.random.default_rng(6)
    good = g.integers(1, 5, size=300)
    bad = good + g.integers(5, 50, size=300)
    res = paired_comparison(good, bad, "MRR", n_boot=999, seed=1)
    assert res["p_value"] == pytest.approx(1 / 1000)  # no flip is as extreme
    assert res["ci"][0] > 0 and res["diff"] == pytest.approx(res["mean_a"] - res["mean_b"])
    assert res["mean_a"] == pytest.approx(metrics_from_ranks(good)["MRR"])
    back = paired_comparison(bad, good, "MRR", n_boot=999, seed=1)
    assert back["diff"] == pytest.approx(-res["diff"]) and back["p_value"] == res["p_value"]


def test_paired_noise_is_not_significant():
    g = np.random.default_rng(8)
    a, b = g.integers(1, 30, size=400), g.integers(1, 30, size=400)  # same distribution
    assert paired_comparison(a, b, "HR@10", n_boot=999)["p_value"] > 0.01
    with pytest.raises(ValueError, match="same shape"):
        paired_comparison(a, b[:10], "HR@10")


# ----------------------------------------------------------------------------------------
# evaluate() with stand-ins for the model and the data dir


class SumModel(nn.Module):
    """Hidden state at t = sum of the embeddings of items[..t] (+ type offsets): the last
    position's state depends on every history event in the window, so a wrong window
    or a wrong alignment changes the ranks."""

    def __init__(self, table: np.ndarray, max_len: int, n_types: int = 0):
        super().__init__()
        self.emb = nn.Embedding.from_pretrained(torch.tensor(table, dtype=torch.float32))
        self.cfg = SimpleNamespace(max_len=max_len, n_types=n_types)
        self.n_items = len(table) - 1
        self.widths: list[int] = []  # T of each batch it was given

    def forward(self, items: torch.Tensor, types: torch.Tensor | None = None) -> torch.Tensor:
        assert items.shape[1] <= self.cfg.max_len
        self.widths.append(items.shape[1])
        h = self.emb(items)  # (B, T, d)
        if types is not None:
            h = h + types[..., None].float()
        return h.cumsum(1)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class FakeData:
    """DataDir stand-in: users' events in one array, one eval target per user."""

    def __init__(self, seed: int, n_users: int = 9, n_items: int = 30, with_types: bool = False):
        g = np.random.default_rng(seed)
        lens = g.integers(2, 25, size=n_users)
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.items = g.integers(1, n_items + 1, size=int(lens.sum())).astype(np.int32)
        self.types = g.integers(0, 3, size=int(lens.sum())).astype(np.int8) if with_types else None
        self.n_items = n_items
        self.valid_end = self.offsets[1:] - 1  # leave-one-out: test = last, valid = second to last
        self.train_end = self.offsets[1:] - 2

    def eval_targets(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        end = {"valid": self.train_end, "test": self.valid_end}[split]
        users = np.flatnonzero(end > self.offsets[:-1])  # users with >= 1 event of history
        return users, end[users]


def ref_evaluate(table, data: FakeData, split: str, window: int, filter_seen: bool = False, types: bool = False):
    users, end = data.eval_targets(split)
    q, targets, seen = [], [], []
    for u, e in zip(users, end):
        lo = max(data.offsets[u], e - window)
        q.append(table[data.items[lo:e]].sum(0) + (data.types[lo:e].sum() if types else 0))
        targets.append(data.items[e])
        seen.append(list(data.items[data.offsets[u] : e]))  # the whole history
    return users, ref_ranks(np.array(q), table, np.array(targets), seen if filter_seen else None)


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("filter_seen", [False, True])
def test_evaluate_matches_reference(split, filter_seen):
    data = FakeData(seed=11)
    table = int_case(12, n=30)[1]
    model = SumModel(table, max_len=6).train()
    users, ranks = evaluate(model, data, split, batch_size=4, item_chunk=7, filter_seen=filter_seen)
    want_users, want = ref_evaluate(table, data, split, window=6, filter_seen=filter_seen)
    np.testing.assert_array_equal(users, want_users)
    np.testing.assert_array_equal(ranks, want)
    assert model.training  # left as it came in
    progress = []
    evaluate(model, data, split, batch_size=4, on_batch=lambda done, total: progress.append((done, total)))
    assert progress[-1] == (len(users), len(users)) and len(progress) == math.ceil(len(users) / 4)


def test_evaluate_uses_types_and_window():
    data = FakeData(seed=13, with_types=True)
    table = int_case(14, n=30)[1]
    model = SumModel(table, max_len=5, n_types=3)
    _, ranks = evaluate(model, data, "test", batch_size=3)
    np.testing.assert_array_equal(ranks, ref_evaluate(table, data, "test", window=5, types=True)[1])
    model = SumModel(table, max_len=50)  # window longer than any history
    _, ranks = evaluate(model, data, "test")
    np.testing.assert_array_equal(ranks, ref_evaluate(table, data, "test", window=50)[1])


def test_evaluate_batches_users_by_history_length_without_padding_beyond_the_longest():
    data = FakeData(seed=17, n_users=40)
    table = int_case(18, n=30)[1]
    model = SumModel(table, max_len=12)
    users, ranks = evaluate(model, data, "test", batch_size=5)
    np.testing.assert_array_equal(ranks, ref_evaluate(table, data, "test", window=12)[1])  # in target order
    _, end = data.eval_targets("test")
    lengths = np.sort(np.minimum(end - data.offsets[users], 12))  # history in the window, shortest first
    assert model.widths == [int(lengths[lo : lo + 5].max()) for lo in range(0, len(users), 5)]
    assert model.widths[0] < 12


def test_evaluate_rejects_item_count_mismatch():
    data = FakeData(seed=15, n_items=30)
    model = SumModel(int_case(0, n=31)[1], max_len=4)
    with pytest.raises(ValueError, match="31"):
        evaluate(model, data, "test")
