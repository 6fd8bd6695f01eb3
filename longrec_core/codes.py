"""Item codes assigned from the training data (RecJPQ's SVD assignment), for compressed item embeddings.

An item's code is m small integers, one per sub-space, each in [0, centroids). The codes come from a
truncated SVD of the binary user x item matrix X of *training* events (user u's events
`items[offsets[u]:train_end[u]]`; validation and test targets, at and after train_end, are never
read): component i of the SVD is sub-space i, and the items seen in training are ranked by their value
on it and cut into `centroids` equal buckets, so items that are consumed by the same users get the
same or nearby codes, and every code value is used by as many items as any other (balanced codes).
Items with no training event have no SVD value; they get the k-shift hash instead
(`longrec_core.kshift_rows(ids, k=m, rows=centroids, seed=seed, scheme="mix")`).

That is RecJPQ's assignment (`assignment="quantile"`): m SVD components, one per code, so a code holds
one coordinate and the item's m codes hold an m-dimensional SVD. `assignment="pq"` is product
quantisation of a wider one: K = `components` SVD components (default 8 per code), each item's
vector V_i Σ scaled to unit length (its direction: how its users' tastes mix, not how many users it
has), cut into m sub-vectors (component c goes to sub-space c mod m, so every sub-space gets leading
and trailing components alike), and each sub-space's k-means (`centroids` clusters, fitted on a seeded
sample of at most `KMEANS_SAMPLE` seen items, Lloyd's iterations) gives the code: the nearest centroid.
Items sharing a code are alike in K/m dimensions of the SVD instead of in one. Items with the same
training users get the same vector; where the codes have room (centroids^m at least 4 N), all but one
of each such group get one code redrawn at random (`spread_duplicates`), so no two items share a
vector. Its SVD is K + oversample columns wide, so its memory is K/m times the quantile assignment's:
5.8 GB at N = 10^7 and K = 64, too much at 10^8.

    codes = item_codes(training_events(data), data.n_items, subspaces=8, centroids=256, seed=0)
    codes.codes      # (N+1, m) uint8 (uint16 above 256 centroids); row 0 = padding, all zeros
    codes.unseen     # (N+1,) bool, items that got hashed codes (row 0 is False: padding is no item)

The SVD is randomized (Halko, Martinsson and Tropp 2011) and works on the item side only, so its
memory is O(N l) floats (l = m + oversample columns) whatever the number of users: Y = XᵀX Ω from a
seeded Gaussian Ω, `n_iter` power passes Y = XᵀX Q with re-orthonormalization, then Rayleigh-Ritz on
QᵀXᵀXQ (an l x l matrix). Each pass streams over the users in chunks of about `chunk_events` training
events: X_c Q is `np.add.reduceat` of Q's item rows per user, X_cᵀ P_c the same per item after a sort
by item, so no U x N matrix and no N-sized temporary per chunk exist. Time O(passes x nnz x l) plus a
sort of each chunk's events per pass; memory two (N+1) x l float32 arrays (the basis and the next
product; at N = 10^8 and l = m + oversample = 16, 12.8 GB: pass a smaller oversample there) plus a
chunk's events and the (N+1) x m codes. NumPy only, no torch.

Deterministic for a seed on one machine: the Gaussian start and the tie-breaks come from NumPy's PCG64
(the same on every machine), but the floating-point sums of the BLAS products may round differently
with another BLAS or thread count, which can move an item across a bucket boundary. Train.py stores
the codes in the model, so a run and its resumption never recompute them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from longrec_core.choices import CODE_ASSIGNMENTS

if TYPE_CHECKING:
    from longrec_core.datadir import DataDir

MAX_CENTROIDS = 1 << 16  # codes are stored as uint16 at most
CHUNK_EVENTS = 1 << 21  # training events per streamed chunk of users (a chunk's temporaries: ~100 MB at l = 16)
# rows of an (N+1) x l array handled at once in the dense steps: 4 MB of float64 at l = 16, so the
# temporaries stay in cache and are reused instead of page-faulted in (5-10x faster than 2^20 rows)
ROW_BLOCK = 1 << 16
OVERSAMPLE = 8  # the randomized SVD's extra columns by default (train.py --code-oversample)
COMPONENTS_PER_CODE = 8  # pq: SVD components per code by default (train.py --code-components)
KMEANS_SAMPLE = 1 << 17  # pq: items each sub-space's k-means is fitted on (all items then get the nearest)
KMEANS_ITERS = 25  # pq: Lloyd's iterations of each k-means


# one data dir's (or shard's) training events: items (E,), offsets (U+1,) and train_end (U,)
Events = tuple[np.ndarray, np.ndarray, np.ndarray]


def training_events(data: DataDir | str | os.PathLike[str]) -> list[Events]:
    """The parts `item_codes` reads: [(items, offsets, train_end)] of a loaded DataDir, or of a data
    dir's path, one part per shard of a sharded dir (each memory-mapped, none concatenated, so the
    events' other arrays are never read)."""
    from longrec_core.datadir import load_data_dir, load_shards, shard_count

    if isinstance(data, (str, os.PathLike)):
        n = shard_count(data)
        parts = [load_shards(data, which=[k]) for k in range(n)] if n else [load_data_dir(data)]
    else:
        parts = [data]
    return [(d.items, d.offsets, d.train_end) for d in parts]


@dataclass
class ItemCodes:
    """The result of `item_codes`: codes (N+1, m) uint8 or uint16, row 0 = padding (zeros); unseen (N+1,)
    bool, True for items 1..N without a training event (their codes are hashed); singular_values (m, or K for pq)
    float64, of the binary training matrix, in descending order (0 where the matrix has lower rank)."""

    codes: np.ndarray
    unseen: np.ndarray
    singular_values: np.ndarray

    @property
    def unseen_share(self) -> float:
        """Share of the N items whose codes are hashed (no training event)."""
        n = len(self.unseen) - 1
        return float(self.unseen[1:].sum()) / n if n else 0.0


def code_dtype(centroids: int) -> np.dtype:
    """The smallest unsigned integer type that holds codes 0..centroids-1 (1 or 2 bytes)."""
    if not 1 <= centroids <= MAX_CENTROIDS:
        raise ValueError(f"centroids must be in 1..{MAX_CENTROIDS}, got {centroids}")
    return np.dtype(np.uint8 if centroids <= 256 else np.uint16)


# ---------------------------------------------------------------------------------------------
# the binary training matrix, streamed in chunks of users


@dataclass
class _Chunk:
    """One chunk of users' distinct (user, item) training pairs, in two orders for the two products.

    pair_user (nnz,) int64: the pair's user, as a row of the chunk's user sums (only users with a pair);
    items (nnz,) int64: the pair's item; user_starts: where each user's pairs begin (pairs sorted by
    user); by_item: the permutation sorting the pairs by item (stable); item_starts: where each item's
    run begins in that order; item_ids: the item of each run."""

    pair_user: np.ndarray
    items: np.ndarray
    user_starts: np.ndarray
    by_item: np.ndarray
    item_starts: np.ndarray
    item_ids: np.ndarray


def _chunks(events: Sequence[Events], n_items: int, chunk_events: int) -> Iterator[_Chunk]:
    """The binary matrix X of training events, part after part, chunk by chunk of consecutive users
    with about `chunk_events` training events each (a user with more is a chunk alone). Repeated
    (user, item) events count once: X is binary, as in RecJPQ."""
    for items, offsets, train_end in events:
        yield from _part_chunks(items, offsets, train_end, n_items, chunk_events)


def _part_chunks(
    items: np.ndarray, offsets: np.ndarray, train_end: np.ndarray, n_items: int, chunk_events: int
) -> Iterator[_Chunk]:
    """`_chunks` of one part."""
    begin = np.asarray(offsets[:-1], dtype=np.int64)
    lens = np.clip(np.asarray(train_end, dtype=np.int64) - begin, 0, None)  # (U,) training events per user
    cum = np.concatenate([[0], np.cumsum(lens)])
    n_users, u0 = len(lens), 0
    while u0 < n_users:
        u1 = max(u0 + 1, int(np.searchsorted(cum, cum[u0] + chunk_events, side="right")) - 1)
        u1 = min(u1, n_users)
        lo, ln = begin[u0:u1], lens[u0:u1]
        total = int(ln.sum())
        if total:
            rows = np.repeat(np.arange(u1 - u0, dtype=np.int64), ln)  # (nnz,) user within the chunk
            idx = np.arange(total, dtype=np.int64) + np.repeat(lo - (np.cumsum(ln) - ln), ln)
            # distinct (user, item) pairs, sorted: the keys are already in user order, so the stable sort
            # (timsort, which finds the runs) costs little; np.unique was 15x slower here
            key = np.sort(rows * (n_items + 1) + np.asarray(items[idx], dtype=np.int64), kind="stable")
            key = key[np.concatenate([[True], key[1:] != key[:-1]])]
            rows, its = np.divmod(key, n_items + 1)
            new_user = np.concatenate([[True], rows[1:] != rows[:-1]])
            by_item = np.argsort(its, kind="stable")
            sorted_items = its[by_item]
            item_starts = np.flatnonzero(np.concatenate([[True], sorted_items[1:] != sorted_items[:-1]]))
            yield _Chunk(
                pair_user=np.cumsum(new_user) - 1,
                items=its,
                user_starts=np.flatnonzero(new_user),
                by_item=by_item,
                item_starts=item_starts,
                item_ids=sorted_items[item_starts],
            )
        u0 = u1


def _x_times(q: np.ndarray, c: _Chunk) -> np.ndarray:
    """X_c @ q: (users of the chunk with a pair, l) float32, each user's sum of its items' rows of q."""
    return np.add.reduceat(q[c.items], c.user_starts, axis=0)


def _add_xt_times(y: np.ndarray, p: np.ndarray, c: _Chunk) -> None:
    """y += X_cᵀ @ p in place: each item's row gets the sum of p's rows of the users that have it."""
    y[c.item_ids] += np.add.reduceat(p[c.pair_user[c.by_item]], c.item_starts, axis=0)


def _orthonormalize(y: np.ndarray) -> np.ndarray:
    """Turn y's columns (N+1, l) float32 into an orthonormal basis of their span, in place (and return
    y): CholeskyQR2 done with an eigendecomposition of the float64 Gram matrix (twice, for accuracy),
    so directions of (near) zero norm are damped rather than divided by zero. y = y @ W block by block
    of rows: no second (N+1) x l array."""
    for _ in range(2):
        gram = np.zeros((y.shape[1], y.shape[1]))
        for lo in range(0, len(y), ROW_BLOCK):
            block = y[lo : lo + ROW_BLOCK].astype(np.float64)
            gram += block.T @ block
        lam, w = np.linalg.eigh(gram)
        floor = max(float(lam.max()), 1e-300) * 1e-12
        w = (w / np.sqrt(np.maximum(lam, floor))).astype(np.float32)
        tmp = np.empty((min(ROW_BLOCK, len(y)), y.shape[1]), dtype=np.float32)  # one reused temporary
        for lo in range(0, len(y), ROW_BLOCK):
            block = y[lo : lo + ROW_BLOCK]
            np.matmul(block, w, out=tmp[: len(block)])
            block[:] = tmp[: len(block)]
    return y


def _projected_gram(q: np.ndarray, events: Sequence[Events], n_items: int, chunk_events: int) -> np.ndarray:
    """QᵀXᵀXQ (l, l) in float64, summed over user chunks as (X_c Q)ᵀ (X_c Q)."""
    small = np.zeros((q.shape[1], q.shape[1]))
    for c in _chunks(events, n_items, chunk_events):
        p = _x_times(q, c).astype(np.float64)
        small += p.T @ p
    return small


def _fix_signs(factors: np.ndarray) -> None:
    """Flip each column so its largest-magnitude entry is positive (sklearn's svd_flip convention),
    making the factors deterministic."""
    for j in range(factors.shape[1]):
        if factors[np.argmax(np.abs(factors[:, j])), j] < 0:
            factors[:, j] *= -1


def training_item_factors(
    events: Sequence[Events],
    n_items: int,
    components: int,
    *,
    seed: int,
    n_iter: int = 4,
    oversample: int = OVERSAMPLE,
    chunk_events: int = CHUNK_EVENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top `components` right singular vectors of the binary training matrix X (users x items).

    events: parts of (items (ids 1..N), CSR offsets (U+1,), training ends (U,)), a data dir's or each
    shard's (`training_events`); only events before train_end are read. Returns (factors, singular_values, seen):
    factors (N+1, components) float32 with orthonormal columns (row 0 and items without a training
    event are 0), each column's sign fixed so its largest-magnitude entry is positive;
    singular_values (components,) float64, descending; seen (N+1,) bool, items with a training event.
    With l = min(components + oversample, N) < components (a catalogue this small) the extra columns
    are zero.
    """
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    for _, offsets, train_end in events:
        if len(offsets) != len(train_end) + 1:
            raise ValueError(f"offsets has {len(offsets)} entries but train_end {len(train_end)}: want U+1 and U")
    n = n_items + 1
    width = max(1, min(components + oversample, n_items))  # l
    gen = np.random.default_rng([seed, 0])
    omega = gen.standard_normal((n, width), dtype=np.float32)
    omega[0] = 0.0  # padding is no item
    seen = np.zeros(n, dtype=bool)

    def gram_pass(q: np.ndarray) -> np.ndarray:
        """XᵀX q, one streamed pass over the users."""
        y = np.zeros_like(q)
        for c in _chunks(events, n_items, chunk_events):
            _add_xt_times(y, _x_times(q, c), c)
            seen[c.item_ids] = True
        return y

    q = _orthonormalize(gram_pass(omega))
    del omega
    for _ in range(n_iter):
        q = _orthonormalize(gram_pass(q))
    # Rayleigh-Ritz: the eigenvectors of QᵀXᵀXQ = sum over chunks of (X_c Q)ᵀ (X_c Q) rotate Q onto the
    # singular vectors; its eigenvalues are the squared singular values.
    lam, w = np.linalg.eigh(_projected_gram(q, events, n_items, chunk_events))
    top = np.argsort(-lam, kind="stable")[:components]
    w = w[:, top].astype(np.float32)
    factors = np.zeros((n, components), dtype=np.float32)
    for lo in range(0, n, ROW_BLOCK):
        factors[lo : lo + ROW_BLOCK, : len(top)] = q[lo : lo + ROW_BLOCK] @ w
    factors[~seen] = 0.0  # exactly: an item without a training event has no coordinate
    _fix_signs(factors)
    sigma = np.zeros(components)
    sigma[: len(top)] = np.sqrt(np.maximum(lam[top], 0.0))
    return factors, sigma, seen


def balanced_codes(values: np.ndarray, centroids: int, tiebreak: np.ndarray) -> np.ndarray:
    """Rank `values` (n,) ascending, ties by `tiebreak` (n,), and cut the ranking into `centroids`
    buckets of equal size (sizes differ by at most 1): (n,) int64 bucket of each value, in 0..centroids-1."""
    n = len(values)
    order = np.lexsort((tiebreak, values))
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n, dtype=np.int64) * centroids // max(n, 1)
    return out


def _nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, w) points, (k, w) centers -> (n,) int64 index of each point's nearest center (squared
    Euclidean distance; ties to the lower index), ROW_BLOCK points at a time."""
    half_norms = 0.5 * (centers * centers).sum(1)
    out = np.empty(len(points), dtype=np.int64)
    for lo in range(0, len(points), ROW_BLOCK):
        # argmin |p - c|^2 = argmin |c|^2 / 2 - p.c: one matrix product per block
        out[lo : lo + ROW_BLOCK] = np.argmin(half_norms - points[lo : lo + ROW_BLOCK] @ centers.T, axis=1)
    return out


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007): k of the (n, w) points, each next one drawn
    with probability proportional to its squared distance to the nearest one drawn so far."""
    n = len(points)
    centers = np.empty((k, points.shape[1]))
    centers[0] = points[rng.integers(n)]
    dist = ((points - centers[0]) ** 2).sum(1)
    for i in range(1, k):
        total = dist.sum()
        pick = rng.choice(n, p=dist / total) if total > 0 else rng.integers(n)  # all points taken: any
        centers[i] = points[pick]
        dist = np.minimum(dist, ((points - centers[i]) ** 2).sum(1))
    return centers


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = KMEANS_ITERS) -> np.ndarray:
    """Lloyd's k-means of (n, w) float points -> (min(k, n), w) float64 centers, seeded by k-means++
    with `rng`; a cluster left empty restarts from a point picked by `rng`."""
    points = np.asarray(points, dtype=np.float64)
    n, w = points.shape
    k = min(k, n)
    centers = _kmeans_plus_plus(points, k, rng)
    for _ in range(iters):
        assign = _nearest(points, centers)
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, weights=points[:, c], minlength=k) for c in range(w)], axis=1)
        empty = counts == 0
        centers = np.where(empty[:, None], points[rng.integers(0, n, size=k)], sums / np.maximum(counts, 1)[:, None])
    return centers


def pq_codes(vectors: np.ndarray, subspaces: int, centroids: int, seed: int, sample: int = KMEANS_SAMPLE) -> np.ndarray:
    """Product quantisation: (n, K) vectors -> (n, m = subspaces) int64 codes in 0..centroids-1.
    Sub-space j holds components j, j + m, j + 2m, ...; its centers are `kmeans` of at most `sample`
    rows (a seeded choice), and each row's code is its sub-vector's nearest center."""
    n, width = vectors.shape
    if width < subspaces:
        raise ValueError(f"pq needs at least one component per code: {width} components for {subspaces} codes")
    rng = np.random.default_rng([seed, 2])
    fit = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    codes = np.empty((n, subspaces), dtype=np.int64)
    for j in range(subspaces):
        sub = vectors[:, j::subspaces]
        codes[:, j] = _nearest(sub, kmeans(sub[fit], centroids, rng).astype(sub.dtype))
    return codes


def spread_duplicates(codes: np.ndarray, centroids: int, seed: int, rounds: int = 16) -> np.ndarray:
    """(n, m) int64 codes -> the same with identical rows made distinct, in place (and returned): every
    row that repeats an earlier one gets one code, in a sub-space and to a value drawn from a seeded
    generator, replaced; repeated for `rounds` rounds or until no row repeats. Items with the same
    training users have the same SVD vector, hence the same pq code, and identical codes would give them
    one vector the model cannot tell apart; one code of m drawn at random keeps the other m - 1 alike."""
    rng = np.random.default_rng([seed, 3])
    n, m = codes.shape
    for _ in range(rounds):
        _, first = np.unique(codes, axis=0, return_index=True)
        repeats = np.setdiff1d(np.arange(n), first)
        if not len(repeats):
            break
        codes[repeats, rng.integers(0, m, size=len(repeats))] = rng.integers(0, centroids, size=len(repeats))
    return codes


def _seen_codes(
    factors: np.ndarray, sigma: np.ndarray, assignment: str, subspaces: int, centroids: int, seed: int
) -> np.ndarray:
    """(n, m) int64 codes of the n items seen in training from their (n, K) SVD factors (`item_codes`)."""
    if assignment == "quantile":
        tiebreak = np.random.default_rng([seed, 1]).permutation(len(factors))
        return np.stack([balanced_codes(factors[:, j], centroids, tiebreak) for j in range(subspaces)], axis=1)
    vectors = factors * sigma.astype(np.float32)  # V Σ: the items' SVD coordinates
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-30))
    codes = pq_codes(vectors, subspaces, centroids, seed)
    if subspaces * math.log(centroids) >= math.log(4 * len(codes)):  # C^m >= 4n: room to spread the repeats
        codes = spread_duplicates(codes, centroids, seed)
    return codes


def item_codes(
    events: Sequence[Events],
    n_items: int,
    *,
    subspaces: int,
    centroids: int,
    seed: int,
    assignment: str = "quantile",
    components: int | None = None,
    n_iter: int = 4,
    oversample: int = OVERSAMPLE,
    chunk_events: int = CHUNK_EVENTS,
) -> ItemCodes:
    """Codes (N+1, m = subspaces) of items 1..N from the training events alone (module docstring).

    assignment "quantile" (RecJPQ): sub-space i ranks the items seen in training by their value on the
    i-th right singular vector of the binary training matrix and cuts the ranking into `centroids` equal
    buckets; ties are broken by a seeded random order. "pq": `pq_codes` of the seen items' unit-length
    V Σ over `components` SVD components (None: 8 per code). Items without a training event get the
    k-shift hash of their id (`kshift_rows(ids, k=m, rows=centroids, seed=seed, scheme="mix")`). Row 0
    (padding) is zeros. `singular_values` are the m (quantile) or K (pq) of the components used.
    """
    from longrec_core import kshift_rows  # the Rust core (numpy only)

    dtype = code_dtype(centroids)
    if subspaces < 1:
        raise ValueError(f"subspaces must be >= 1, got {subspaces}")
    if assignment not in CODE_ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {', '.join(CODE_ASSIGNMENTS)}, got {assignment!r}")
    if components is not None and assignment != "pq":
        raise ValueError(f"components applies to assignment 'pq' only, not {assignment!r}")
    width = subspaces if assignment == "quantile" else (components or COMPONENTS_PER_CODE * subspaces)
    if width < subspaces:
        raise ValueError(f"pq needs at least one component per code: {width} components for {subspaces} codes")
    factors, sigma, seen = training_item_factors(
        events,
        n_items,
        width,
        seed=seed,
        n_iter=n_iter,
        oversample=oversample,
        chunk_events=chunk_events,
    )
    codes = np.zeros((n_items + 1, subspaces), dtype=dtype)
    seen_ids = np.flatnonzero(seen)
    if len(seen_ids):
        codes[seen_ids] = _seen_codes(factors[seen_ids], sigma, assignment, subspaces, centroids, seed)
    del factors
    unseen = ~seen
    unseen[0] = False
    unseen_ids = np.flatnonzero(unseen)
    for lo in range(0, len(unseen_ids), ROW_BLOCK):  # int64 rows of a block at a time
        ids = unseen_ids[lo : lo + ROW_BLOCK]
        codes[ids] = kshift_rows(ids, k=subspaces, rows=centroids, seed=seed, scheme="mix")
    return ItemCodes(codes=codes, unseen=unseen, singular_values=sigma)


def hashed_codes(n_items: int, subspaces: int, centroids: int, seed: int) -> np.ndarray:
    """(N+1, m) codes of every item as `item_codes` gives an item without a training event: the k-shift
    hash of its id; row 0 (padding) zeros. The codes of a model built without data (load_model fills in
    the checkpoint's), and the fallback of unseen items."""
    from longrec_core import kshift_rows  # the Rust core (numpy only)

    codes = np.zeros((n_items + 1, subspaces), dtype=code_dtype(centroids))
    for lo in range(1, n_items + 1, ROW_BLOCK):
        ids = np.arange(lo, min(n_items + 1, lo + ROW_BLOCK), dtype=np.int64)
        codes[ids] = kshift_rows(ids, k=subspaces, rows=centroids, seed=seed, scheme="mix")
    return codes
