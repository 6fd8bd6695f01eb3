"""A seeded generator of realistic interaction logs, from a few thousand events to 10^9.

The log has the structure a sequential recommender should find, and it rewards the two
things this project is about: training on *every* window of a long history (more
examples of the same item-to-item dynamics) and reading a long context (a user's tastes
and where they stopped in each one lie far back in a long history).

How one user's history is made:
- Items fall into `clusters` ("genres"), each an ordered chain (think: a series and its
  episodes). Cluster popularity is Zipf-like, and so is item popularity inside a cluster,
  highest at the start of the chain, so overall popularity is long-tailed.
- A user has a few tastes (2 to 12 clusters, more for longer histories) with Dirichlet
  weights. They stay in one taste for a while (a phase of ~1/p_switch events), then move
  to another of their tastes, drawn by weight.
- Inside a taste the next item usually follows the chain from where *this user* last
  stopped in that cluster (1, 2 or 3 steps ahead), else jumps to a popular item of the
  cluster. So after a switch, the next item depends on an event that may be hundreds of
  events back.
- Now and then an item comes from anywhere (global popularity), and a taste drifts to a
  neighbouring cluster (p_drift per event), so long histories are not stationary.
- History lengths are log-normal (median ~60, some users 10^3 to 10^4 events); times
  come in sessions (a few minutes between events, days between sessions) and the whole
  log is ordered by time across users, like a real one.

Generation is chunked: users are made in blocks of BLOCK users, each block from its own
seed, so `chunks()` can stream any number of events with memory bounded by one block,
and the result does not depend on how the caller consumes the blocks.
Raw ids are 1..users and 1..items (like MovieLens); prep maps them to its own indices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

BLOCK = 16_384  # users per generated block (fixed: part of what a seed means)
START = 1_577_836_800  # 2020-01-01T00:00:00Z, the earliest possible event


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator; `to_dict()` goes into the data dir manifest."""

    users: int = 2_000
    items: int = 1_000
    seed: int = 0
    clusters: int = 0  # 0: items // 50, at least 2
    median_len: float = 60.0  # history length: log-normal median ...
    len_sigma: float = 1.4  # ... and log-sd (p99 ~ 26x the median)
    min_len: int = 5
    max_len: int = 20_000
    p_switch: float = 0.04  # per event: move to another of the user's tastes
    p_chain: float = 0.7  # inside a taste: a successor of the user's last item there (else a popular one)
    successors: int = 4  # successors per item (inside its cluster) ...
    succ_alpha: float = 1.0  # ... with Dirichlet(succ_alpha) weights
    p_noise: float = 0.1  # per event: an item from anywhere, by global popularity
    p_drift: float = 0.002  # per event: one taste moves to a neighbouring cluster
    zipf: float = 1.1  # popularity exponent (clusters, items inside a cluster, noise)
    span_days: int = 730  # the log covers this many days
    session_len: float = 8.0  # mean events per session
    in_session_gap_s: float = 120.0  # mean seconds between events of one session

    def __post_init__(self) -> None:
        checks = [
            (self.users >= 1, f"users must be >= 1, got {self.users}"),
            (self.items >= 2, f"items must be >= 2, got {self.items}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.clusters == 0 or 1 <= self.clusters <= self.items, f"clusters must be in 1..items, got {self.clusters}"),
            (1 <= self.min_len <= self.max_len, f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}"),
            (self.median_len > 0 and self.len_sigma >= 0, "median_len must be > 0 and len_sigma >= 0"),
            (self.span_days >= 1, f"span_days must be >= 1, got {self.span_days}"),
        ]
        for p in ("p_switch", "p_chain", "p_noise", "p_drift"):
            v = getattr(self, p)
            checks.append((0.0 <= v <= 1.0, f"{p} must be in [0, 1], got {v}"))
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def n_clusters(self) -> int:
        return self.clusters or max(2, self.items // 50)

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def expected_len(self) -> float:
        """Mean history length (the clipped log-normal), for sizing by events."""
        nd, n = NormalDist(), 4096
        mu = math.log(self.median_len)
        qs = (min(max(math.exp(mu + self.len_sigma * nd.inv_cdf((i + 0.5) / n)), self.min_len), self.max_len) for i in range(n))
        return sum(qs) / n


def users_for_events(events: int, **params: float | int) -> int:
    """How many users make about `events` events with these generator settings."""
    if events < 1:
        raise ValueError(f"events must be >= 1, got {events}")
    return max(1, round(events / SyntheticConfig(**params).expected_len()))  # type: ignore[arg-type]


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    cdf = np.cumsum(w)
    return cdf / cdf[-1]


class _Catalogue:
    """The item side, shared by all users: clusters, their Markov graphs, and popularity."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        c, n, k = cfg.n_clusters, cfg.items, cfg.successors
        # Cluster j holds members[first[j]:first[j+1]], most popular first; sizes vary.
        sizes = 1 + rng.multinomial(n - c, rng.dirichlet(np.full(c, 2.0)))
        self.size = sizes.astype(np.int64)
        self.first = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.members = rng.permutation(n).astype(np.int64)  # item codes 0..N-1
        cluster_of_slot = np.repeat(np.arange(c), sizes)
        # Cluster popularity: Zipf over a random order of clusters.
        self.cluster_cdf = _zipf_cdf(c, cfg.zipf)
        self.cluster_rank = rng.permutation(c)  # rank r -> cluster
        # Item popularity inside a cluster: Zipf over member position (one table for all
        # clusters, long enough for the largest; a draw is folded into the cluster).
        self.pos_cdf = _zipf_cdf(int(sizes.max()), cfg.zipf)
        # Each item's successors: `k` members of its own cluster (popular ones likelier),
        # with Dirichlet weights. This item-to-item graph is what a model has to learn.
        cluster_of = np.empty(n, dtype=np.int64)
        cluster_of[self.members] = cluster_of_slot
        self.cluster_of = cluster_of
        succ_clusters = np.repeat(cluster_of, k)
        self.succ = self.members[self.first[succ_clusters] + self.draw_pos(rng, succ_clusters)].reshape(n, k)
        w = rng.gamma(cfg.succ_alpha, size=(n, k))
        self.succ_cdf = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)
        # Global popularity for noise: Zipf over a random order of items.
        self.item_cdf = _zipf_cdf(n, cfg.zipf)
        self.item_rank = rng.permutation(n)

    def draw_clusters(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return self.cluster_rank[np.searchsorted(self.cluster_cdf, rng.random(shape))]

    def draw_pos(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.pos_cdf, rng.random(len(clusters))) % self.size[clusters]

    def draw_member(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        return self.members[self.first[clusters] + self.draw_pos(rng, clusters)]

    def draw_next(self, rng: np.random.Generator, last: np.ndarray) -> np.ndarray:
        pick = (rng.random(len(last))[:, None] > self.succ_cdf[last]).sum(axis=1)
        return self.succ[last, np.minimum(pick, self.succ.shape[1] - 1)]

    def draw_items(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.item_rank[np.searchsorted(self.item_cdf, rng.random(n))]


def _block(cfg: SyntheticConfig, cat: _Catalogue, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users [block*BLOCK, ...) of the log: (user, item, ts) raw ids, in time order."""
    rng = np.random.default_rng([cfg.seed, 1, block])
    u0 = block * BLOCK
    nu = min(BLOCK, cfg.users - u0)
    lens = np.exp(math.log(cfg.median_len) + cfg.len_sigma * rng.standard_normal(nu))
    lens = np.clip(np.rint(lens), cfg.min_len, cfg.max_len).astype(np.int64)

    # Tastes: K clusters per user (more for long histories), Dirichlet(1) weights.
    k_max = 12
    n_tastes = np.clip(2 + rng.poisson(np.log1p(lens / 50.0)), 2, k_max)
    tastes = cat.draw_clusters(rng, (nu, k_max))  # (nu, k_max); only [:n_tastes] used
    weights = rng.gamma(1.0, size=(nu, k_max)) * (np.arange(k_max) < n_tastes[:, None])
    taste_cdf = np.cumsum(weights, axis=1)
    taste_cdf /= taste_cdf[:, -1:]
    last = np.full((nu, k_max), -1, dtype=np.int64)  # the user's last item in each taste, -1 = none
    slot = (rng.random(nu)[:, None] > taste_cdf).sum(axis=1)  # current taste

    # Walk all users one step at a time, vectorized over users. Users are visited
    # longest first, so the ones still active at step t are a prefix of `order`.
    order = np.argsort(-lens, kind="stable")
    lens_sorted = lens[order]
    base = np.zeros(nu + 1, dtype=np.int64)
    np.cumsum(lens_sorted, out=base[1:])
    items = np.empty(base[-1], dtype=np.int64)
    tastes, taste_cdf, slot = tastes[order], taste_cdf[order], slot[order]
    n_active = np.searchsorted(-lens_sorted, -np.arange(lens_sorted[0] if nu else 0), side="left")
    for t, n in enumerate(n_active):  # n = number of users with more than t events
        rows = np.arange(n)
        r = rng.random((5, n))
        switch = r[0] < cfg.p_switch
        slot[:n][switch] = (r[1, switch, None] > taste_cdf[:n][switch]).sum(axis=1)
        drift = np.flatnonzero(r[2] < cfg.p_drift)
        if drift.size:
            ds = slot[drift]
            tastes[drift, ds] = (tastes[drift, ds] + np.where(r[1, drift] < 0.5, -1, 1)) % cat.size.size
            last[drift, ds] = -1
        s = slot[:n]
        prev = last[rows, s]
        follow = (r[3] < cfg.p_chain) & (prev >= 0)
        item = cat.draw_member(rng, tastes[rows, s])  # a popular item of the taste ...
        if follow.any():  # ... or a successor of the user's last item in it
            item[follow] = cat.draw_next(rng, prev[follow])
        noise = r[4] < cfg.p_noise  # an item from anywhere; the taste's last item stays
        last[rows[~noise], s[~noise]] = item[~noise]
        if noise.any():
            item[noise] = cat.draw_items(rng, int(noise.sum()))
        items[base[:n] + t] = item

    # Times: sessions of ~session_len events a few minutes apart, days apart otherwise;
    # each user active over part of the span, starting at a random time.
    span = cfg.span_days * 86_400
    active_s = span * rng.uniform(0.05, 1.0, nu)
    n_sessions = np.maximum(lens_sorted / cfg.session_len, 1.0)
    session_gap = active_s / n_sessions
    per_event_gap_mean = np.repeat(session_gap, lens_sorted)
    new_session = rng.random(items.size) < 1.0 / cfg.session_len
    gaps = 1 + rng.exponential(1.0, items.size) * np.where(new_session, per_event_gap_mean, cfg.in_session_gap_s)
    gaps[base[:-1]] = 0
    # Per-user cumulative sums of the gaps, from one global cumsum.
    cum = np.cumsum(gaps)
    cum -= np.repeat(cum[base[:-1]], lens_sorted)
    begin = START + rng.uniform(0, 1, nu) * np.maximum(span - cum[base[1:] - 1], 0)
    ts = (np.repeat(begin, lens_sorted) + cum).astype(np.int64)

    user = np.repeat(u0 + order + 1, lens_sorted)
    by_time = np.argsort(ts, kind="stable")
    return user[by_time], items[by_time] + 1, ts[by_time]


def chunks(cfg: SyntheticConfig) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield the log block by block: (user, item, ts) int64 arrays, each block in time order.

    Memory is bounded by one block (BLOCK users); blocks overlap in time, so a consumer
    that needs global time order must sort (prep's `group` does).
    """
    cat = _Catalogue(cfg)
    for block in range(math.ceil(cfg.users / BLOCK)):
        yield _block(cfg, cat, block)


def generate(
    users: int = 2_000, items: int = 1_000, seed: int = 0, **params: float | int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole log as (user, item, ts) int64 arrays of raw ids, ordered by time across users.

    Same arguments, same log, on any machine. `params` are further SyntheticConfig fields.
    """
    cfg = SyntheticConfig(users=users, items=items, seed=seed, **params)  # type: ignore[arg-type]
    parts = list(chunks(cfg))
    user, item, ts = (np.concatenate([p[i] for p in parts]) for i in range(3))
    by_time = np.argsort(ts, kind="stable")
    return user[by_time], item[by_time], ts[by_time]


def write_parquet(path: str, cfg: SyntheticConfig) -> None:
    """Stream the log to one Parquet file (columns user, item, ts; a row group per block).

    Only one block is in memory at a time, so this scales to 10^9 events.
    """
    import polars as pl
    from polars.io.plugins import register_io_source

    schema = {"user": pl.Int64, "item": pl.Int64, "ts": pl.Int64}

    def source(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        for user, item, ts in chunks(cfg):
            df = pl.DataFrame({"user": user, "item": item, "ts": ts}, schema=schema)
            if predicate is not None:
                df = df.filter(predicate)
            yield df if with_columns is None else df.select(with_columns)

    register_io_source(source, schema=schema).sink_parquet(path)
