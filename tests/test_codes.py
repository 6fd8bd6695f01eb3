"""Item codes from the training events (longrec_core.codes) against plain NumPy references."""

from functools import partial

import numpy as np
import pytest

from longrec_core.codes import (
    balanced_codes,
    code_dtype,
    hashed_codes,
    item_codes,
    kmeans,
    pq_codes,
    spread_duplicates,
    training_item_factors,
)

try:
    from longrec_core import kshift_rows
except ImportError:  # the Rust core is not built yet
    kshift_rows = None
needs_core = pytest.mark.skipif(kshift_rows is None, reason="longrec_core._core is not built (run maturin develop)")


def planted_log(users: int = 300, items: int = 120, seed: int = 0, groups: int = 4):
    """A log whose users prefer the items of their group (a spectral gap to find), with popular items.
    Returns (items int32 (E,), offsets (U+1,), train_end (U,)): the last two events of each user are
    its validation and test targets."""
    rng = np.random.default_rng(seed)
    user_group, item_group = rng.integers(0, groups, users), rng.integers(0, groups, items)
    popularity = np.linspace(2.0, 0.2, items)
    seqs = []
    for u in range(users):
        p = np.where(item_group == user_group[u], 5.0, 1.0) * popularity
        seqs.append(rng.choice(np.arange(1, items + 1), size=int(rng.integers(4, 30)), p=p / p.sum()))
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return np.concatenate(seqs).astype(np.int32), offsets, offsets[1:] - 2


def dense_training_matrix(items, offsets, train_end, n_items):
    """The binary users x (N+1) matrix of training events, the plain way."""
    x = np.zeros((len(train_end), n_items + 1))
    for u in range(len(train_end)):
        x[u, items[offsets[u] : train_end[u]]] = 1.0
    return x


def test_factors_match_numpy_svd_up_to_sign():
    items, offsets, train_end = planted_log()
    _, s, vt = np.linalg.svd(dense_training_matrix(items, offsets, train_end, 120))
    factors, sigma, seen = training_item_factors([(items, offsets, train_end)], 120, 4, seed=3, n_iter=30)
    np.testing.assert_allclose(sigma, s[:4], rtol=1e-5)
    for j in range(4):
        want = vt[j] * np.sign(vt[j][np.argmax(np.abs(vt[j]))])  # the sign convention: largest entry > 0
        np.testing.assert_allclose(factors[:, j], want, atol=2e-4)
    assert factors.dtype == np.float32 and factors.shape == (121, 4)
    np.testing.assert_array_equal(
        seen,
        np.bincount(
            items[np.concatenate([np.arange(offsets[u], train_end[u]) for u in range(len(train_end))])], minlength=121
        )
        > 0,
    )


def test_streamed_chunks_give_the_same_factors():
    items, offsets, train_end = planted_log()
    whole, s1, _ = training_item_factors([(items, offsets, train_end)], 120, 4, seed=0)
    chunked, s2, _ = training_item_factors([(items, offsets, train_end)], 120, 4, seed=0, chunk_events=7)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)  # only the float sums' order differs
    np.testing.assert_allclose(s2, s1, rtol=1e-6)


def test_parts_of_the_users_give_the_factors_of_all_of_them():
    """A sharded data dir is read shard by shard: X of two parts is the stack of their users."""
    items, offsets, train_end = planted_log()
    cut = 140  # the first part's users
    first = (items[: offsets[cut]], offsets[: cut + 1], train_end[:cut])
    second = (items[offsets[cut] :], offsets[cut:] - offsets[cut], train_end[cut:] - offsets[cut])
    whole, s1, seen1 = training_item_factors([(items, offsets, train_end)], 120, 4, seed=0)
    parts, s2, seen2 = training_item_factors([first, second], 120, 4, seed=0)
    np.testing.assert_allclose(parts, whole, atol=1e-5)
    np.testing.assert_allclose(s2, s1, rtol=1e-6)
    np.testing.assert_array_equal(seen2, seen1)


@needs_core
def test_codes_follow_the_svd_ranking_in_balanced_buckets():
    items, offsets, train_end = planted_log()
    _, _, vt = np.linalg.svd(dense_training_matrix(items, offsets, train_end, 120))
    out = item_codes([(items, offsets, train_end)], 120, subspaces=3, centroids=8, seed=0, n_iter=30)
    assert out.codes.dtype == np.uint8 and out.codes.shape == (121, 3) and not out.codes[0].any()
    seen = np.flatnonzero(~out.unseen)[1:]  # items 1..N with a training event (all of them here)
    assert len(seen) == 120
    for j in range(3):
        ref = vt[j] * np.sign(vt[j][np.argmax(np.abs(vt[j]))])
        code = out.codes[seen, j].astype(int)
        sizes = np.bincount(code, minlength=8)
        assert sizes.min() == sizes.max() == 15  # 120 items in 8 equal buckets
        # a clearly larger value on the exact SVD's component never gets a smaller code
        a, b = np.meshgrid(seen, seen, indexing="ij")
        clearly_larger = ref[a] > ref[b] + 1e-3
        assert (out.codes[a[clearly_larger], j] >= out.codes[b[clearly_larger], j]).all()
        assert clearly_larger.sum() > 0.9 * 120 * 119 / 2  # the check is not vacuous


def test_balanced_codes_hand_made():
    values = np.array([0.3, -1.0, 0.3, 2.0, 0.0, 0.3])
    tiebreak = np.array([2, 0, 1, 0, 0, 0])  # ranks the three 0.3s: item 5, then item 2, then item 0
    # ascending order: 1 (-1.0), 4 (0.0), 5, 2, 0 (0.3 by tiebreak), 3 (2.0); 6 ranks in 3 buckets of 2
    np.testing.assert_array_equal(balanced_codes(values, 3, tiebreak), [2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(balanced_codes(values, 4, tiebreak), [2, 0, 2, 3, 0, 1])  # sizes 2,1,2,1
    assert code_dtype(256) == np.uint8 and code_dtype(257) == np.uint16 and code_dtype(65536) == np.uint16
    with pytest.raises(ValueError, match=r"centroids must be in 1\.\.65536"):
        code_dtype(65537)


ASSIGNMENTS = pytest.mark.parametrize("assignment", ["quantile", "pq"])


@needs_core
@ASSIGNMENTS
def test_codes_never_read_validation_or_test_targets(assignment):
    items, offsets, train_end = planted_log(seed=1)
    codes = partial(item_codes, subspaces=4, centroids=16, seed=0, assignment=assignment)
    before = codes([(items, offsets, train_end)], 125)
    # every event at or after a user's training end becomes another item, some of them new (121..125)
    changed = items.copy()
    rng = np.random.default_rng(9)
    for u in range(len(train_end)):
        changed[train_end[u] : offsets[u + 1]] = rng.integers(1, 126, offsets[u + 1] - train_end[u])
    assert (changed != items).mean() > 0.05
    after = codes([(changed, offsets, train_end)], 125)
    np.testing.assert_array_equal(after.codes, before.codes)
    np.testing.assert_array_equal(after.unseen, before.unseen)
    # ... while a changed training event does change them (so the equality above is not vacuous)
    changed = items.copy()
    changed[offsets[0]] = 1 + changed[offsets[0]] % 120
    changed[offsets[1]] = 1 + changed[offsets[1]] % 120
    assert not np.array_equal(codes([(changed, offsets, train_end)], 125).codes, before.codes)


@needs_core
@ASSIGNMENTS
def test_deterministic_for_a_seed_and_seeds_differ(assignment):
    items, offsets, train_end = planted_log(seed=2)
    codes = partial(item_codes, [(items, offsets, train_end)], 130, subspaces=4, centroids=16, assignment=assignment)
    a, b = codes(seed=5), codes(seed=5)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.singular_values, b.singular_values)
    assert not np.array_equal(a.codes, codes(seed=6).codes)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    label = rng.integers(0, 3, 300)
    points = centers[label] + rng.normal(scale=0.5, size=(300, 2))
    found = kmeans(points, 3, np.random.default_rng(1))
    assert found.shape == (3, 2)
    # every true center has a found one within 0.3 (the clusters' means, up to noise)
    assert (np.abs(found[:, None] - centers[None]).max(-1).min(0) < 0.3).all()
    assert kmeans(points[:2], 5, np.random.default_rng(1)).shape == (2, 2)  # k above the points: one each


def test_pq_codes_quantise_each_subspace_on_its_own_components():
    """Components go to sub-spaces round robin (c -> c mod m): sub-space 0 reads columns 0 and 2, where
    items 0..49 and 50..99 form two clusters; sub-space 1 reads columns 1 and 3, split at item 25."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(scale=0.05, size=(100, 4))
    vectors[50:, [0, 2]] += 3.0
    vectors[25:, [1, 3]] -= 3.0
    codes = pq_codes(vectors, 2, 2, seed=0)
    assert codes.shape == (100, 2) and codes.dtype == np.int64
    for j, cut in ((0, 50), (1, 25)):
        assert len(set(codes[:cut, j])) == len(set(codes[cut:, j])) == 1 and codes[0, j] != codes[-1, j]
    with pytest.raises(ValueError, match="at least one component per code: 3 components for 4 codes"):
        pq_codes(vectors[:, :3], 4, 2, seed=0)


def test_spread_duplicates_makes_rows_distinct_and_keeps_the_first():
    codes = np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [4, 4, 4]])
    before = codes.copy()
    out = spread_duplicates(codes, 256, seed=0)
    assert len(np.unique(out, axis=0)) == 5
    np.testing.assert_array_equal(out[[0, 2, 4]], before[[0, 2, 4]])  # rows that repeat nothing are kept
    assert ((out[[1, 3]] != before[[1, 3]]).sum(1) == 1).all()  # a repeat has one code redrawn


@needs_core
def test_pq_codes_split_items_by_the_users_that_like_them():
    """Two groups of items, each liked 5x more by its own group of users: one code of two values over
    the first two SVD components (popularity and the group contrast, as a direction) puts nearly every
    item with its group."""
    items, offsets, train_end = planted_log(users=600, items=120, seed=3, groups=2)
    out = item_codes(
        [(items, offsets, train_end)], 120, subspaces=1, centroids=2, seed=0, assignment="pq", components=2
    )
    assert out.codes.shape == (121, 1) and out.singular_values.shape == (2,)
    rng = np.random.default_rng(3)
    _, item_group = rng.integers(0, 2, 600), rng.integers(0, 2, 120)  # planted_log's draws, in its order
    agree = (out.codes[1:, 0] == item_group).mean()
    assert max(agree, 1 - agree) > 0.9
    with pytest.raises(ValueError, match="components applies to assignment 'pq' only"):
        item_codes([(items, offsets, train_end)], 120, subspaces=2, centroids=4, seed=0, components=4)


@needs_core
def test_unseen_items_get_the_kshift_hash():
    items, offsets, train_end = planted_log(seed=4)  # items 121..140 never occur; a few others only as targets
    n = 140
    out = item_codes([(items, offsets, train_end)], n, subspaces=5, centroids=300, seed=11)
    training = np.concatenate([items[offsets[u] : train_end[u]] for u in range(len(train_end))])
    want_unseen = np.ones(n + 1, dtype=bool)
    want_unseen[training] = False
    want_unseen[0] = False
    np.testing.assert_array_equal(out.unseen, want_unseen)
    assert out.unseen_share == pytest.approx(want_unseen.sum() / n) and want_unseen[121:].all()
    ids = np.flatnonzero(want_unseen)
    assert out.codes.dtype == np.uint16
    np.testing.assert_array_equal(out.codes[ids], kshift_rows(ids, k=5, rows=300, seed=11, scheme="mix"))
    np.testing.assert_array_equal(hashed_codes(n, 5, 300, 11)[ids], out.codes[ids])
    assert not hashed_codes(n, 5, 300, 11)[0].any()


@needs_core
def test_repeated_training_events_count_once():
    items, offsets, train_end = planted_log(seed=5)
    u = 7  # repeat user 7's first training event right after it
    pos = offsets[u]
    repeated = np.insert(items, pos + 1, items[pos])
    offsets2, train_end2 = offsets.copy(), train_end.copy()
    offsets2[u + 1 :] += 1
    train_end2[u:] += 1
    a = item_codes([(items, offsets, train_end)], 120, subspaces=4, centroids=8, seed=0)
    b = item_codes([(repeated, offsets2, train_end2)], 120, subspaces=4, centroids=8, seed=0)
    np.testing.assert_array_equal(a.codes, b.codes)


@needs_core
def test_tiny_catalogues_and_users_without_training_events():
    # 3 items, more sub-spaces than items; user 1 has no training event at all
    items = np.array([1, 2, 3, 1, 2, 3, 2], dtype=np.int32)
    offsets = np.array([0, 3, 4, 7])
    train_end = np.array([2, 3, 6])
    out = item_codes([(items, offsets, train_end)], 3, subspaces=6, centroids=4, seed=0)
    assert out.codes.shape == (4, 6) and not out.unseen.any() and out.codes.max() < 4
    assert np.isfinite(out.singular_values).all() and (out.singular_values[3:] == 0).all()
