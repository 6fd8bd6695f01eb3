"""Full-catalogue ranking metrics: the one evaluation path of train.py and eval.py.

Every target is ranked against *every* item 1..N of the catalogue (no sampled
negatives; 0 is padding and never ranked). Rank = 1 + number of other items whose
score is >= the target's score, so ties count against the model, and a NaN score
counts against it too. Scores are float32 dot products between the model's last
hidden state and the item vectors, computed in item chunks and user batches, so
memory is O(batch x item_chunk), never users x catalogue.

Metrics from the ranks (one target per user): HR@K (= Recall@K), NDCG@K =
1/log2(rank+1) when rank <= K else 0, MRR@K = 1/rank when rank <= K else 0, and the
untruncated MRR; percentile-bootstrap confidence intervals over users; a paired
comparison of two runs on common users (bootstrap CI of the mean difference and a
sign-flip permutation p-value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

import longrec_core
from longrec_core.choices import FILTER_SEEN_CHOICES, KS
from longrec_core.datadir import DataDir, history_events
from longrec_core.examples import window_prefix

ItemVectors = Callable[[Tensor], Tensor] | Tensor  # ids [n] -> [n, d], or a table [N+1, d]


# ---------------------------------------------------------------------------------
# Ranking


def _seen_pairs(
    seen: Tensor | tuple[Tensor, Tensor] | None, m: int, device: torch.device
) -> tuple[Tensor, Tensor] | None:
    """Normalize `seen` to (rows [P], items [P]) on `device`, dropping padding (item 0)."""
    if seen is None:
        return None
    if isinstance(seen, Tensor):  # padded [M, S], 0 = padding
        if seen.dim() != 2 or seen.shape[0] != m:
            raise ValueError(f"seen must be a padded [M, S] tensor with M = {m} rows, got shape {tuple(seen.shape)}")
        rows, cols = torch.nonzero(seen > 0, as_tuple=True)
        items = seen[rows, cols]
    else:
        rows, items = seen
        if rows.shape != items.shape:
            raise ValueError("seen (rows, items) must have the same length")
        keep = items > 0
        rows, items = rows[keep], items[keep]
    return rows.to(device, torch.long), items.to(device, torch.long)


@torch.inference_mode()
def rank_of_targets(
    query: Tensor,
    targets: Tensor,
    item_vectors: ItemVectors,
    n_items: int,
    *,
    item_chunk: int = 65536,
    seen: Tensor | tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Rank each target among all items 1..n_items; returns LongTensor [M] of ranks >= 1.

    query: [M, d] user states; targets: [M] item ids in 1..n_items.
    item_vectors: a function ids [n] -> [n, d] (e.g. `model.item_vectors`) or a table
    [n_items+1, d] indexed by id. seen: items to drop from the competitors, either a
    padded LongTensor [M, S] (0 = padding) or (rows [P], items [P]) pairs; the target
    itself is never a competitor, so excluding it changes nothing.

    Each chunk's matmul also scores the M targets (their vectors are prepended to the
    chunk), so every comparison uses a target score from the very call that scored the
    competitors: a tie between identical vectors is a real tie, not rounding noise.
    """
    m = query.shape[0]
    if targets.shape != (m,):
        raise ValueError(f"targets must have shape [{m}], got {tuple(targets.shape)}")
    if item_chunk < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    dev = query.device
    q = query.float()  # (M, d)
    t_ids = targets.to(dev, torch.long)  # (M,)
    if m and (int(t_ids.min()) < 1 or int(t_ids.max()) > n_items):
        raise ValueError(f"targets must be item ids in 1..{n_items} (0 is padding)")
    pairs = _seen_pairs(seen, m, dev)
    rows = torch.arange(m, device=dev)
    count = torch.zeros(m, dtype=torch.long, device=dev)
    with torch.autocast(device_type=dev.type, enabled=False):  # scores in float32, even under autocast
        for lo in range(1, n_items + 1, item_chunk):
            hi = min(lo + item_chunk, n_items + 1)
            ids = torch.cat([t_ids, torch.arange(lo, hi, device=dev)])  # (M + C,)
            vecs = item_vectors[ids] if isinstance(item_vectors, Tensor) else item_vectors(ids)
            s = q @ vecs.to(dev, torch.float32).T  # (M, M + C)
            t = s[rows, rows]  # (M,) target scores, same call as the chunk's scores
            ge = ~(s[:, m:] < t[:, None])  # (M, C) competitor >= target; NaN counts against
            own = (t_ids >= lo) & (t_ids < hi)  # the target is not its own competitor
            ge[rows[own], t_ids[own] - lo] = False
            if pairs is not None:
                sel = (pairs[1] >= lo) & (pairs[1] < hi)
                ge[pairs[0][sel], pairs[1][sel] - lo] = False
            count += ge.sum(1)
    return count + 1


# ---------------------------------------------------------------------------------
# Metrics from ranks


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """["HR@1", "NDCG@1", "MRR@1", ..., "MRR"] in table order."""
    return [f"{m}@{k}" for k in ks for m in ("HR", "NDCG", "MRR")] + ["MRR"]


def per_user(ranks: np.ndarray, name: str) -> np.ndarray:
    """Per-user value [U] float64 of metric `name` ("HR@10", "NDCG@10", "MRR@10" or "MRR")."""
    r = np.asarray(ranks, dtype=np.float64)
    if name == "MRR":
        return 1.0 / r
    kind, _, k_str = name.partition("@")
    if kind not in ("HR", "NDCG", "MRR") or not k_str.isdigit() or int(k_str) < 1:
        raise ValueError(f"unknown metric {name!r}: expected HR@K, NDCG@K, MRR@K or MRR")
    hit = r <= int(k_str)
    if kind == "HR":
        return hit.astype(np.float64)
    gain = 1.0 / np.log2(r + 1.0) if kind == "NDCG" else 1.0 / r
    return np.where(hit, gain, 0.0)


def _values(ranks: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Per-user metric matrix [U, len(names)], after checking the ranks."""
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("ranks must be a non-empty 1-d array (no users to evaluate?)")
    if not np.issubdtype(r.dtype, np.integer) or int(r.min()) < 1:
        raise ValueError("ranks must be integers >= 1")
    return np.stack([per_user(r, n) for n in names], axis=1)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean of each metric over users: {"HR@1": .., "NDCG@1": .., "MRR@1": .., ..., "MRR": ..}."""
    names = metric_names(ks)
    means = _values(ranks, names).mean(axis=0)
    return {n: float(v) for n, v in zip(names, means)}


def _resampled_means(values: np.ndarray, n: int, seed: int, flip: bool) -> np.ndarray:
    """[n, m] means of `values` [U, m] under n bootstrap resamples of the users, or
    (flip=True) under n random sign flips of each user's value. Vectorized in blocks
    of at most ~4M draws, so memory stays bounded for any number of users."""
    u = values.shape[0]
    rng = np.random.default_rng(seed)
    block = max(1, min(n, (1 << 22) // u))
    out = []
    for done in range(0, n, block):
        b = min(block, n - done)
        if flip:
            w = rng.integers(0, 2, size=(b, u)) * 2 - 1  # (b, U) signs
        else:  # how often each user is drawn in each resample: (b, U) counts
            idx = rng.integers(0, u, size=(b, u)) + u * np.arange(b)[:, None]
            w = np.bincount(idx.ravel(), minlength=b * u).reshape(b, u)
        out.append(w @ values / u)
    return np.concatenate(out)


def bootstrap_ci(
    ranks: np.ndarray, ks: Sequence[int] = KS, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap (1 - alpha) interval of each metric's mean, resampling users."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    names = metric_names(ks)
    boot = _resampled_means(_values(ranks, names), n_boot, seed, flip=False)  # (n_boot, m)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi)}


def paired_comparison(
    ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Compare two runs on the same users (ranks_a[i] and ranks_b[i] are one user).

    Returns metric, n_users, mean_a, mean_b, diff (= mean_a - mean_b), ci (percentile
    bootstrap interval of diff) and p_value: two-sided sign-flip permutation test of
    "no difference" ((1 + #{|flipped mean| >= |diff|}) / (1 + n_boot)); identical runs
    give p = 1. Trust the p-value over the interval when few users differ: e.g. 4 users
    of 200 gaining a hit gives p = 1/8 (exact sign-flip), while the percentile bootstrap
    interval, never drawing a resample without them, already excludes 0.
    """
    a, b = np.asarray(ranks_a), np.asarray(ranks_b)
    if a.shape != b.shape:
        raise ValueError(f"paired ranks must have the same shape, got {a.shape} and {b.shape}")
    va, vb = _values(a, [metric])[:, 0], _values(b, [metric])[:, 0]
    d = (va - vb)[:, None]  # (U, 1) paired differences
    diff = float(d.mean())
    boot = _resampled_means(d, n_boot, seed, flip=False)[:, 0]
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    flips = _resampled_means(d, n_boot, seed + 1, flip=True)[:, 0]
    extreme = int((np.abs(flips) >= abs(diff) - 1e-12).sum())  # tolerance: float sums of equal values
    return {
        "metric": metric,
        "n_users": int(a.size),
        "mean_a": float(va.mean()),
        "mean_b": float(vb.mean()),
        "diff": diff,
        "ci": (float(lo), float(hi)),
        "p_value": (1 + extreme) / (1 + n_boot),
    }


# ---------------------------------------------------------------------------------
# Evaluating a model on a data dir


def resolve_filter_seen(choice: str, data: DataDir) -> bool:
    """Whether evaluation drops the user's already-seen items from the competitors.

    "yes"/"no" force it; "auto" filters exactly when no validation or test target repeats a seen
    item (`DataDir.repeat_target_share` is 0): the published protocol for data without repeat
    consumption (ml-1m, Amazon), and unfiltered where a seen item can be the right answer.
    """
    if choice not in FILTER_SEEN_CHOICES:
        raise ValueError(f"filter_seen must be one of {', '.join(FILTER_SEEN_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return data.repeat_target_share() == 0.0
    return choice == "yes"


class RankModel(Protocol):
    """What `evaluate` needs from a model: an nn.Module like longrec_core.model.SASRec."""

    cfg: Any  # ModelConfig: max_len (the evaluation window), n_types
    n_items: int
    training: bool

    def __call__(
        self, items: Tensor, types: Tensor | None = None, prefix: Tensor | None = None
    ) -> Tensor: ...  # [B, T] -> [B, T, d]

    def item_vectors(self, ids: Tensor) -> Tensor: ...  # [n] -> [n, d], zeros for id 0

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...


_TABLE_BYTES = 1 << 31  # cache the composed item table when it fits in 2 GiB


def _item_table(model: RankModel, n_items: int, chunk: int, device: torch.device) -> ItemVectors:
    """All item vectors [N+1, d] float32, computed once per evaluation (k-shift composes
    k rows per item, so recomputing them per user batch would cost more than scoring);
    falls back to `model.item_vectors` itself when the table would not fit."""
    d = model.item_vectors(torch.zeros(1, dtype=torch.long, device=device)).shape[-1]
    if (n_items + 1) * d * 4 > _TABLE_BYTES:
        return lambda ids: model.item_vectors(ids).float()
    table = torch.empty(n_items + 1, d, device=device)
    for lo in range(0, n_items + 1, chunk):
        hi = min(lo + chunk, n_items + 1)
        table[lo:hi] = model.item_vectors(torch.arange(lo, hi, device=device)).float()
    return table


def _history_pairs(data: Any, users: np.ndarray, end: np.ndarray) -> tuple[Tensor, Tensor]:
    """(rows [P], items [P]): every event of each user before its target (the whole
    history, not just the window), for --filter-seen."""
    rows, idx = history_events(data.offsets, users, end)
    return torch.from_numpy(rows), torch.from_numpy(np.asarray(data.items[idx], dtype=np.int64))


@torch.inference_mode()
def _targets(data: Any, split: str, sample: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(users (M,), target event index (M,)) of the split, or of a seeded sample of `sample` of them."""
    users, end = (np.asarray(a, dtype=np.int64) for a in data.eval_targets(split))  # (M,), (M,)
    if sample is not None and sample < len(users):
        pick = np.sort(np.random.default_rng(seed).choice(len(users), sample, replace=False))
        users, end = users[pick], end[pick]
    return users, end


def _histories(
    data: Any, u: np.ndarray, e: np.ndarray, window: int, use_types: bool, summary_events: int, dev: torch.device
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(history (B, window) left-padded, target (B,), event types of the history (B, window) or None,
    the `summary_events` events before the history (B, summary_events) or None) on `dev`, for users
    `u` with targets at event index `e`."""
    start = np.maximum(data.offsets[u], e - window)
    seq = torch.from_numpy(longrec_core.gather(data.items, start, e + 1, length=window))  # (B, window+1)
    hist, target = seq[:, :-1].to(dev), seq[:, -1].to(dev)  # (B, window), (B,)
    types = prefix = None
    if use_types:
        types = torch.from_numpy(longrec_core.gather(data.types, start, e + 1, length=window))[:, :-1].to(dev)
    if summary_events:
        prefix = window_prefix(data.items, data.offsets, u, start, summary_events).to(dev)
    return hist, target, types, prefix


def _rank_batch(
    model: RankModel,
    hist: Tensor,
    target: Tensor,
    types: Tensor | None,
    prefix: Tensor | None,
    table: Tensor,
    seen: tuple[Tensor, Tensor] | None,
    item_chunk: int,
) -> Tensor:
    """The rank of each target (B,) among all items, from the model's state after the last history
    event; `seen` (rows, items) on the CPU, when given, are competitors left out."""
    dev = hist.device
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        hidden = model(hist, types) if prefix is None else model(hist, types, prefix)  # (B, window, d)
    query = hidden[:, -1].float()  # (B, d) state after the last history event
    on_dev = None if seen is None else (seen[0].to(dev), seen[1].to(dev))
    return rank_of_targets(query, target, table, int(model.n_items), item_chunk=item_chunk, seen=on_dev)


def _batches_by_length(
    data: Any, users: np.ndarray, end: np.ndarray, window: int, batch_size: int
) -> Iterator[tuple[int, np.ndarray, int]]:
    """(first position, indices into users, width) of each batch of users with histories of
    similar length, each batch as wide as its longest history: positions count from the right,
    so left padding never changes a score, only costs time."""
    length = np.minimum(end - np.asarray(data.offsets, dtype=np.int64)[users], window)  # (M,)
    order = np.argsort(length, kind="stable")
    for lo in range(0, len(users), batch_size):
        pick = order[lo : lo + batch_size]
        yield lo, pick, max(int(length[pick].max()), 1)


def evaluate(
    model: RankModel,
    data: Any,
    split: str,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    filter_seen: bool = False,
    item_chunk: int = 65536,
    window: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    summary: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank every `split` ("valid" | "test") target of `data` (a DataDir) on the full catalogue.

    History = the `window` events before the target (default: the model's max_len),
    left-padded with 0 to the longest history of its batch (users are batched by history
    length); the query is the model's hidden state at the last position.
    filter_seen drops every item of the user's history before the target (all of it,
    not just the window) from the competitors. Returns (users [M] int64, ranks [M]
    int64) in the order of `data.eval_targets(split)`. on_batch(done, total) is called
    after each user batch (for progress bars). The model is left in the mode it came in.
    `sample` ranks only a seeded random sample of that many targets (for catalogues so large
    that ranking every target costs hours; each sampled target is still ranked on all items).
    A model with a history summary (cfg.summary_tokens > 0) also reads the `summary_events` events
    before the history, unless `summary` is False (prediction from the window alone).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    cfg = model.cfg
    window = int(window if window is not None else cfg.max_len)
    n_items = int(model.n_items)
    if data.n_items != n_items:
        raise ValueError(f"the data dir has {data.n_items:,} items but the model was trained on {n_items:,}")
    use_types = data.types is not None and getattr(cfg, "n_types", 0) > 0
    summary_events = int(getattr(cfg, "summary_events", 0)) if summary else 0
    users, end = _targets(data, split, sample, sample_seed)
    ranks = np.empty(len(users), dtype=np.int64)

    was_training = model.training
    model.train(False)
    try:
        table = _item_table(model, n_items, item_chunk, dev)
        for lo, pick, width in _batches_by_length(data, users, end, window, batch_size):
            u, e = users[pick], end[pick]
            hist, target, types, prefix = _histories(data, u, e, width, use_types, summary_events, dev)
            seen = _history_pairs(data, u, e) if filter_seen else None
            r = _rank_batch(model, hist, target, types, prefix, table, seen, item_chunk)
            ranks[pick] = r.cpu().numpy()
            if on_batch is not None:
                on_batch(lo + len(u), len(users))
    finally:
        model.train(was_training)
    return users, ranks
