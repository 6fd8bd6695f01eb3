"""A seeded generator of realistic interaction logs, from a few thousand events to 10^9.

The log has the structure a sequential recommender should find, and it rewards the two
things this project is about: training on *every* window of a long history (more
examples of the same item-to-item dynamics than the last window holds) and reading a long
context (where a user stopped in each of their tastes can lie far back).

How one user's history is made (the story; the code computes it for all users at once):
- Items fall into `clusters` ("genres"). Cluster popularity is Zipf-like over a random
  order of clusters, and so is item popularity inside a cluster, so overall popularity
  is long-tailed. Each item has `successors` items of its own cluster that tend to follow
  it, with Dirichlet(1) weights: an item-to-item graph a model has to learn from examples
  (computed from a hash of the seed and the item wherever it is needed, never stored).
- A user has a few tastes (2 to 12 clusters, more for longer histories) with Dirichlet(1)
  weights. Before each event, with p_switch they move to a taste drawn by weight.
- Inside the current taste, with p_chain the next item is a successor of the user's last
  item *in that taste* (which, after a switch, can be hundreds of events back), else a
  popular item of the cluster or, with p_favorite, one of the user's own `favorites` in
  that cluster (fixed per user and cluster, so they recur over the whole history: the
  more of it a model reads, the more of them it knows); with p_noise the event is
  instead any item, by global popularity (it does not count as the taste's last item).
- With p_drift per event the current taste moves to a neighbouring cluster and its chain
  restarts, so long histories are not stationary.
- History lengths are log-normal (median ~50, some users 10^3 to 10^4 events); times come
  in sessions (a few minutes between events, days between sessions), each user active
  over part of a two-year span, and the log is ordered by time across users.

Generation is chunked: users are made in blocks of BLOCK users, each block from its own
seed and in time order, so `chunks()` streams any number of events with memory bounded
by one block, and the log does not depend on how the caller consumes the blocks.
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
MAX_TASTES = 12


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator; `to_dict()` goes into the data dir manifest."""

    users: int = 2_000
    items: int = 3_000
    seed: int = 0
    clusters: int = 0  # 0: items // 50, at least 2
    median_len: float = 50.0  # history length: log-normal median ...
    len_sigma: float = 1.7  # ... and log-sd (p99 ~ 50x the median; a third of the events lie beyond a user's last 200)
    min_len: int = 5
    max_len: int = 20_000
    p_switch: float = 0.08  # per event: move to a taste drawn by weight (maybe the same)
    p_chain: float = 0.7  # inside a taste: a successor of the user's last item there (else a popular one)
    successors: int = 8  # successors per item (inside its cluster), with Dirichlet(1) weights
    favorites: int = 4  # per user and cluster: personal favourite items ...
    p_favorite: float = 0.5  # ... that a popular-item draw returns instead, with this probability
    p_noise: float = 0.15  # per event: an item from anywhere, by global popularity
    p_drift: float = 0.002  # per event: the current taste moves to a neighbouring cluster
    zipf: float = 0.8  # popularity exponent (clusters, items inside a cluster, noise)
    span_days: int = 730  # the log covers this many days
    session_len: float = 8.0  # mean events per session
    in_session_gap_s: float = 120.0  # mean seconds between events of one session

    def __post_init__(self) -> None:
        checks = [
            (self.users >= 1, f"users must be >= 1, got {self.users}"),
            (self.items >= 2, f"items must be >= 2, got {self.items}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (0 <= self.clusters <= self.items, f"clusters must be in 0..items, got {self.clusters}"),
            (1 <= self.min_len <= self.max_len, f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}"),
            (self.median_len > 0 and self.len_sigma >= 0, "median_len must be > 0 and len_sigma >= 0"),
            (1 <= self.successors <= 256, f"successors must be in 1..256, got {self.successors}"),
            (self.zipf >= 0, f"zipf must be >= 0, got {self.zipf}"),
            (
                self.span_days >= 1 and self.session_len >= 1 and self.in_session_gap_s >= 0,
                "span_days and session_len must be >= 1, in_session_gap_s >= 0",
            ),
        ]
        checks.append((self.favorites >= 1, f"favorites must be >= 1, got {self.favorites}"))
        for name in ("p_switch", "p_chain", "p_noise", "p_drift", "p_favorite"):
            v = getattr(self, name)
            checks.append((0.0 <= v <= 1.0, f"{name} must be in [0, 1], got {v}"))
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def n_clusters(self) -> int:
        return self.clusters or max(2, self.items // 50)

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def expected_len(self) -> float:
        """Mean history length (the clipped log-normal), for sizing a log by events."""
        nd, n, mu = NormalDist(), 4096, math.log(self.median_len)
        lens = (math.exp(mu + self.len_sigma * nd.inv_cdf((i + 0.5) / n)) for i in range(n))
        return sum(min(max(x, self.min_len), self.max_len) for x in lens) / n


def users_for_events(events: int, **params: float | int) -> int:
    """How many users make about `events` events with these generator settings."""
    if events < 1:
        raise ValueError(f"events must be >= 1, got {events}")
    return max(1, round(events / SyntheticConfig(**params).expected_len()))  # type: ignore[arg-type]


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    cdf = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64) ** s)
    return cdf / cdf[-1]


class _Catalogue:
    """The item side, shared by all users: clusters, the successor graph, popularity.

    About 20 bytes per item (int32 codes below 2^31 items): the successor graph is not stored
    but computed from a hash of (seed, item, j) wherever it is asked, so 10^8-item catalogues fit
    in memory."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        c, n = cfg.n_clusters, cfg.items
        code = np.int32 if n < 2**31 else np.int64
        # Cluster j holds members[first[j]:first[j+1]], most popular first; sizes vary.
        sizes = 1 + rng.multinomial(n - c, rng.dirichlet(np.full(c, 2.0)))
        self.n_clusters, self.k = c, cfg.successors
        self.size = sizes.astype(np.int64)
        self.first = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.members = rng.permutation(n).astype(code)  # item codes 0..N-1
        self.cluster_cdf = _zipf_cdf(c, cfg.zipf)
        self.cluster_rank = rng.permutation(c)  # popularity rank -> cluster
        # One Zipf table over member position for all clusters, long enough for the
        # largest; a draw is folded into its cluster by modulo.
        self.pos_cdf = _zipf_cdf(int(sizes.max()), cfg.zipf)
        self.cluster_of = np.empty(n, dtype=code)
        self.cluster_of[self.members] = np.repeat(np.arange(c, dtype=code), sizes)
        self.item_cdf = _zipf_cdf(n, cfg.zipf)  # global popularity, for noise
        self.item_rank = rng.permutation(n).astype(code)
        salt = splitmix64(np.array([cfg.seed, 1, 2], dtype=np.uint64))
        self.favorite_salt, self.succ_salt, self.weight_salt = salt[0], salt[1], salt[2]

    def draw_clusters(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return self.cluster_rank[np.searchsorted(self.cluster_cdf, rng.random(shape))]

    def draw_member(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        return self.member_at(clusters, rng.random(len(clusters)))

    def member_at(self, clusters: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The member of each cluster at popularity quantile u (Zipf over member position)."""
        pos = np.searchsorted(self.pos_cdf, u) % self.size[clusters]
        return self.members[self.first[clusters] + pos].astype(np.int64)

    def successor(self, items: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The j-th successor of each item: a popularity-weighted member of the item's own
        cluster, picked by a hash of (seed, item, j)."""
        key = (items.astype(np.uint64) << np.uint64(8)) + j.astype(np.uint64)
        return self.member_at(self.cluster_of[items].astype(np.int64), unit(key ^ self.succ_salt))

    def draw_next(self, rng: np.random.Generator, prev: np.ndarray) -> np.ndarray:
        """A successor of each item, by its Dirichlet(1) weights over its k successors (i.i.d.
        exponential weights, normalized; hashed like the successors themselves)."""
        keys = (prev.astype(np.uint64) << np.uint64(8))[:, None] + np.arange(self.k, dtype=np.uint64)
        cdf = np.cumsum(-np.log1p(-unit(keys ^ self.weight_salt)), axis=1)  # (m, k)
        pick = ((rng.random(len(prev)) * cdf[:, -1])[:, None] > cdf).sum(axis=1)
        return self.successor(prev, np.minimum(pick, self.k - 1))

    def favorite(self, users: np.ndarray, clusters: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The k-th personal favourite of each user in each cluster: a popularity-weighted
        member picked by a hash of (seed, user, cluster, k), the same wherever it is asked."""
        key = ((users * np.uint64(self.n_clusters) + clusters.astype(np.uint64)) << np.uint64(8)) + k
        return self.member_at(clusters, unit(key ^ self.favorite_salt))

    def draw_items(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.item_rank[np.searchsorted(self.item_cdf, rng.random(n))].astype(np.int64)


def unit(keys: np.ndarray) -> np.ndarray:
    """A uniform float64 in [0, 1) from each uint64 key (the top 53 bits of its splitmix64 hash)."""
    return (splitmix64(keys) >> np.uint64(11)) * 2.0**-53


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic): a fixed, well-mixed hash."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ffill_index(mark: np.ndarray) -> np.ndarray:
    """For each position, the index of the last marked position at or before it (mark[0] must be set)."""
    return np.maximum.accumulate(np.where(mark, np.arange(mark.size), 0))


def _block(cfg: SyntheticConfig, cat: _Catalogue, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users [block*BLOCK, ...) of the log: (user, item, ts) int64 raw ids, in time order.

    Events are laid out user-major (user j's history is [base[j], base[j+1])) while they are
    made; every per-event quantity is a vector over the block's E events. Every step draws
    from the block's one generator, so their order is part of what a seed means.
    """
    rng = np.random.default_rng([cfg.seed, 1, block])
    u0 = block * BLOCK
    nu = min(BLOCK, cfg.users - u0)
    lens, base = _history_lengths(cfg, rng, nu)
    user = np.repeat(np.arange(nu), lens)  # (E,) block-local user
    starts = np.zeros(int(base[-1]), dtype=bool)
    starts[base[:-1]] = True
    tastes, taste_cdf = _tastes(cat, rng, lens)
    slot = _taste_slots(cfg, rng, user, starts, taste_cdf)
    items = _items(cfg, cat, rng, u0, user, slot, tastes)
    ts = _times(cfg, rng, lens, base, user, starts)
    by_time = np.argsort(ts, kind="stable")
    return (u0 + user + 1)[by_time], items[by_time] + 1, ts[by_time]


def _history_lengths(cfg: SyntheticConfig, rng: np.random.Generator, nu: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of `nu` users' history length (log-normal, rounded and clipped) and the user-major
    layout's bounds base (nu+1,): user j's events are [base[j], base[j+1])."""
    lens = np.exp(math.log(cfg.median_len) + cfg.len_sigma * rng.standard_normal(nu))
    lens = np.clip(np.rint(lens), cfg.min_len, cfg.max_len).astype(np.int64)
    base = np.zeros(nu + 1, dtype=np.int64)
    np.cumsum(lens, out=base[1:])
    return lens, base


def _tastes(cat: _Catalogue, rng: np.random.Generator, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's tastes: (nu, MAX_TASTES) clusters and cumulative weights (last column 1).

    A user has 2 to MAX_TASTES tastes, more for longer histories, with Dirichlet(1) weights;
    only the first n_tastes slots have weight, so the others are never drawn."""
    nu = lens.size
    n_tastes = np.clip(2 + rng.poisson(np.log1p(lens / 50.0)), 2, MAX_TASTES)
    tastes = cat.draw_clusters(rng, (nu, MAX_TASTES))
    weights = rng.gamma(1.0, size=(nu, MAX_TASTES)) * (np.arange(MAX_TASTES) < n_tastes[:, None])
    taste_cdf = np.cumsum(weights, axis=1)
    taste_cdf /= taste_cdf[:, -1:]
    return tastes, taste_cdf


def _taste_slots(
    cfg: SyntheticConfig, rng: np.random.Generator, user: np.ndarray, starts: np.ndarray, taste_cdf: np.ndarray
) -> np.ndarray:
    """Current taste (slot) of every event (E,): a draw by weight at each user's start and at
    each switch (p_switch per event), carried forward until the next one."""
    e = user.size
    draw = starts | (rng.random(e) < cfg.p_switch)
    at = np.flatnonzero(draw)
    slot_drawn = (rng.random(at.size)[:, None] > taste_cdf[user[at]]).sum(axis=1)
    slot_val = np.zeros(e, dtype=np.int64)
    slot_val[at] = np.minimum(slot_drawn, MAX_TASTES - 1)
    return slot_val[_ffill_index(draw)]


def _items(
    cfg: SyntheticConfig,
    cat: _Catalogue,
    rng: np.random.Generator,
    u0: int,
    user: np.ndarray,
    slot: np.ndarray,
    tastes: np.ndarray,
) -> np.ndarray:
    """The item code (0-based) of every event (E,), user-major.

    Items are made in thread order (events grouped by (user, taste), in time order), where a
    thread's chain of items is a run of positions, then put back in user-major order."""
    order, th, new_thread, drift_t, cluster = _threads(cfg, cat, rng, user, slot, tastes)
    noise, real, restart = _chain_restarts(cfg, rng, order, th, new_thread, drift_t)
    del th, new_thread, drift_t
    item_t = np.empty(user.size, dtype=np.int64)  # items in thread order
    at = real[restart]
    item_t[at] = _restart_items(cfg, cat, rng, u0, user[order[at]], cluster[at])
    del at, cluster
    _follow_chains(cat, rng, item_t, real, restart)
    item_t[noise] = cat.draw_items(rng, int(noise.sum()))
    items = np.empty(user.size, dtype=np.int64)
    items[order] = item_t
    return items


def _threads(
    cfg: SyntheticConfig,
    cat: _Catalogue,
    rng: np.random.Generator,
    user: np.ndarray,
    slot: np.ndarray,
    tastes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Follow each (user, taste) "thread" in time order, with its cluster drifting.

    Returns order (E,): event ids grouped by thread, in time order (a stable sort); and, in
    that thread order, th (thread id), new_thread (a thread's first event), drift (a drift
    happened at the event) and cluster (the thread's cluster at the event)."""
    e = user.size
    thread = user * MAX_TASTES + slot
    order = np.argsort(thread, kind="stable")  # (E,) event ids, grouped by thread, in time order
    th = thread[order]
    new_thread = np.ones(e, dtype=bool)
    new_thread[1:] = th[1:] != th[:-1]
    # Drift: a +-1 move of the thread's cluster at an event, felt from that event on.
    drift = rng.random(e) < cfg.p_drift
    delta = np.where(drift, np.where(rng.random(e) < 0.5, -1, 1), 0)[order]
    moved = np.cumsum(delta)
    head = _ffill_index(new_thread)  # position of each event's thread start
    moved -= moved[head] - delta[head]  # per-thread running sum
    del head
    cluster = (tastes.reshape(-1)[th] + moved) % cat.n_clusters  # (E,) in thread order
    return order, th, new_thread, drift[order], cluster


def _chain_restarts(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    order: np.ndarray,
    th: np.ndarray,
    new_thread: np.ndarray,
    drift_t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which events (thread order) are noise, and where the chains of the others restart:
    (noise (E,) bool, real = positions of the chain events, restart (per chain event) bool).

    Noise events take any item and leave the thread alone. The others form chains: an
    event continues its thread's chain (a successor of the previous non-noise item)
    unless it is the thread's first, a drift happened since the previous one, or it jumps."""
    noise = (rng.random(order.size) < cfg.p_noise)[order]
    real = np.flatnonzero(~noise)  # positions (thread order) of chain events
    drift_since = np.cumsum(drift_t)  # drifts up to each position
    prev_real = np.concatenate([[0], real[:-1]])
    restart = (
        new_thread[real]
        | (th[real] != th[prev_real])
        | (drift_since[real] - drift_since[prev_real] > 0)
        | (rng.random(real.size) >= cfg.p_chain)
    )
    if restart.size:
        restart[0] = True
    return noise, real, restart


def _restart_items(
    cfg: SyntheticConfig,
    cat: _Catalogue,
    rng: np.random.Generator,
    u0: int,
    users: np.ndarray,
    clusters: np.ndarray,
) -> np.ndarray:
    """The first item of each chain, from its block-local user and its cluster.

    A restart draws a popular item of the cluster, or one of the user's own favourites
    there: fixed per (user, cluster), so they recur across the whole history."""
    items = cat.draw_member(rng, clusters)
    fav = rng.random(clusters.size) < cfg.p_favorite
    uid = (u0 + users[fav]).astype(np.uint64)
    pick = rng.integers(0, cfg.favorites, int(fav.sum())).astype(np.uint64)
    items[fav] = cat.favorite(uid, clusters[fav], pick)
    return items


def _follow_chains(
    cat: _Catalogue, rng: np.random.Generator, item_t: np.ndarray, real: np.ndarray, restart: np.ndarray
) -> None:
    """Fill in place the chain events after each restart, each with a successor of the item one
    step before it (the restarts' items must be set).

    Depth along the chain: 0 at a restart, then 1, 2, ... Items are filled depth by depth,
    each from the item one step before it (a geometric tail: ~log(E) rounds)."""
    depth = np.arange(real.size) - _ffill_index(restart)
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(1, int(depth.max(initial=0)) + 2))
    for d in range(1, bounds.size):
        k = by_depth[bounds[d - 1] : bounds[d]]  # chain positions at depth d
        item_t[real[k]] = cat.draw_next(rng, item_t[real[k - 1]])


def _times(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    lens: np.ndarray,
    base: np.ndarray,
    user: np.ndarray,
    starts: np.ndarray,
) -> np.ndarray:
    """Event times (E,) int64 seconds, user-major; a user's times strictly increase.

    Sessions of ~session_len events a few minutes apart, days apart otherwise; each user
    active over a random part of the span, starting at a random time."""
    nu, e = lens.size, user.size
    span = cfg.span_days * 86_400
    active_s = span * rng.uniform(0.05, 1.0, nu)
    between = (active_s / np.maximum(lens / cfg.session_len, 1.0))[user]  # mean gap between sessions
    new_session = rng.random(e) < 1.0 / cfg.session_len
    gaps = 1.0 + rng.exponential(1.0, e) * np.where(new_session, between, cfg.in_session_gap_s)
    gaps[starts] = 0.0
    cum = np.cumsum(gaps)
    cum -= cum[base[:-1]][user]  # per-user running time, 0 at the first event
    begin = START + rng.uniform(0.0, 1.0, nu) * np.maximum(span - cum[base[1:] - 1], 0.0)
    return (begin[user] + cum).astype(np.int64)  # gaps >= 1 s: a user's times strictly increase


def chunks(cfg: SyntheticConfig) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield the log block by block: (user, item, ts) int64 arrays, each block in time order.

    Memory is bounded by one block (BLOCK users); blocks overlap in time, so a consumer
    that needs one global time order must sort (prep's `group` orders by user and time).
    """
    cat = _Catalogue(cfg)
    for block in range(math.ceil(cfg.users / BLOCK)):
        yield _block(cfg, cat, block)


def generate(
    users: int = 2_000, items: int = 3_000, seed: int = 0, **params: float | int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole log as (user, item, ts) int64 arrays of raw ids, ordered by time across users.

    Same arguments, same log, on any machine. `params` are further SyntheticConfig fields.
    """
    cfg = SyntheticConfig(users=users, items=items, seed=seed, **params)  # type: ignore[arg-type]
    parts = list(chunks(cfg))
    user, item, ts = (np.concatenate([part[k] for part in parts]) for k in range(3))
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
