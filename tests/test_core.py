"""The data core against plain NumPy references on random inputs, plus every kind of bad input."""

import ast
import inspect
import os
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import longrec_core as lc
from longrec_core import _core, stubdoc

# ---------------------------------------------------------------- references


def ref_group(users, ts):
    perm = np.lexsort((np.arange(len(users)), ts, users))  # last key is primary
    su = users[perm]
    change = np.flatnonzero(np.diff(su)) + 1
    offsets = np.concatenate([[0], change, [len(users)]]) if len(users) else np.array([0])
    return perm, offsets


def ref_sessionize(offsets, ts, gap):
    starts = []
    for u in range(len(offsets) - 1):
        a, b = offsets[u], offsets[u + 1]
        for i in range(a, b):
            if i == a or ts[i] - ts[i - 1] > gap:
                starts.append(i)
    return np.array(starts + [len(ts)])


def spans(offsets, ends, max_history):
    for u in range(len(offsets) - 1):
        b = offsets[u + 1] if ends is None else ends[u]
        a = offsets[u] if max_history is None else max(offsets[u], b - max_history)
        yield u, a, b


def ref_windows(offsets, ends, window, stride, min_len, max_history, regime):
    out = []
    for u, a, b in spans(offsets, ends, max_history):
        stops = []
        stop = b
        while stop - a >= min_len:
            stops.append(stop)
            if regime == "last":
                break
            stop -= stride
        out += [(u, max(a, s - window - 1), s) for s in reversed(stops)]
    return tuple(np.array([w[i] for w in out], dtype=np.int64) for i in range(3))


def ref_gather(items, start, stop, length):
    out = np.zeros((len(start), length + 1), dtype=np.int64)
    for r, (s, e) in enumerate(zip(start, stop)):
        row = items[s:e][-(length + 1) :]
        if len(row):
            out[r, -len(row) :] = row
    return out


def random_log(rng, n_users, max_len):
    lengths = rng.integers(0, max_len + 1, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ts = np.concatenate([np.sort(rng.integers(0, 100, n)) for n in lengths]) if n_users else np.zeros(0, np.int64)
    return offsets.astype(np.int64), ts.astype(np.int64)


# ---------------------------------------------------------------- behaviour


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 300), st.sampled_from([5, 1000, 2**40]))
def test_group_matches_reference(seed, n, id_range):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, id_range, n)
    ts = rng.integers(0, 10, n)  # many ties: order among them must follow input order
    perm, offsets = lc.group(users, ts)
    ref_perm, ref_offsets = ref_group(users, ts)
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(offsets, ref_offsets)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint16, np.uint32, np.uint64])
def test_group_accepts_any_integer_width(dtype):
    users = np.array([3, 1, 3, 1], dtype=dtype)
    ts = np.array([4, 3, 2, 1], dtype=dtype)
    perm, offsets = lc.group(users, ts)
    assert perm.dtype == np.int64 and offsets.dtype == np.int64
    np.testing.assert_array_equal(perm, [3, 1, 2, 0])
    np.testing.assert_array_equal(offsets, [0, 2, 4])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 30), st.integers(1, 20))
def test_sessionize_matches_reference(seed, n_users, gap):
    offsets, ts = random_log(np.random.default_rng(seed), n_users, 12)
    np.testing.assert_array_equal(lc.sessionize(offsets, ts, gap), ref_sessionize(offsets, ts, gap))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 20),
    st.integers(1, 12),
    st.integers(1, 15),
    st.integers(2, 5),
    st.one_of(st.none(), st.integers(1, 25)),
    st.sampled_from(["last", "sliding"]),
    st.booleans(),
)
def test_windows_match_reference(seed, n_users, window, stride, min_len, max_history, regime, with_ends):
    rng = np.random.default_rng(seed)
    offsets, _ = random_log(rng, n_users, 40)
    ends = None
    if with_ends:
        ends = np.array([rng.integers(offsets[u], offsets[u + 1] + 1) for u in range(n_users)], dtype=np.int64)
    got = lc.windows(
        offsets, ends, window=window, stride=stride, min_len=min_len, max_history=max_history, regime=regime
    )
    want = ref_windows(offsets, ends, window, stride, min_len, max_history, regime)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.reshape(-1))


def ref_session_windows(offsets, sessions, ends, window, max_history):
    out = []
    for u, a, b in spans(offsets, ends, max_history):
        for s, e in pairwise(sessions):
            if not offsets[u] <= s < b:
                continue
            t0, e = max(s, a + 1), min(e, b)
            stops = list(range(e, t0, -window))  # e, e - window, ... while stop > t0
            out += [(u, max(a, stop - window - 1), stop, max(t0, stop - window)) for stop in reversed(stops)]
    return tuple(np.array([w[i] for w in out], dtype=np.int64) for i in range(4))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 15),
    st.integers(1, 12),
    st.integers(1, 6),
    st.one_of(st.none(), st.integers(1, 25)),
    st.booleans(),
)
def test_session_windows_match_reference_and_take_each_target_once(seed, n_users, window, gap, max_history, with_ends):
    rng = np.random.default_rng(seed)
    offsets, ts = random_log(rng, n_users, 40)
    sessions = lc.sessionize(offsets, ts, gap)
    ends = None
    if with_ends:
        ends = np.array([rng.integers(offsets[u], offsets[u + 1] + 1) for u in range(n_users)], dtype=np.int64)
    got = lc.session_windows(offsets, sessions, ends, window=window, max_history=max_history)
    for g, w in zip(got, ref_session_windows(offsets, sessions, ends, window, max_history)):
        np.testing.assert_array_equal(g, w.reshape(-1))
    seq, start, stop, first = got
    b = (offsets[1:] if ends is None else ends)[seq]
    assert np.all(stop <= b) and np.all(start < first) and np.all(first < stop)  # never past the training end
    assert np.all(stop - start <= window + 1)
    # each window's targets lie in one session, and it ends where that session (or training) ends or is cut
    session_of_first = np.searchsorted(sessions, first, side="right") - 1
    assert np.all(stop <= sessions[session_of_first + 1])
    targets = np.concatenate([np.arange(f, s) for f, s in zip(first, stop)]) if len(seq) else np.zeros(0, np.int64)
    want = np.concatenate(
        [np.arange(a + 1, b_) for _, a, b_ in spans(offsets, ends, max_history) if b_ > a + 1]
        or [np.zeros(0, np.int64)]
    )
    np.testing.assert_array_equal(targets, want)  # every training event but the first, once, in order


def test_session_windows_refuse_sessions_that_cross_sequences():
    with pytest.raises(ValueError, match="sessions: no session starts where sequence 1 does"):
        lc.session_windows(np.array([0, 3, 6]), np.array([0, 2, 6]), window=4)


def test_windows_never_cross_the_end_and_hold_at_most_window_plus_one():
    rng = np.random.default_rng(0)
    offsets, _ = random_log(rng, 50, 300)
    ends = lc.leave_one_out_ends(offsets, 2)
    seq, start, stop = lc.windows(offsets, ends, window=20, stride=7)
    assert np.all(stop <= ends[seq]) and np.all(start >= offsets[seq])
    assert np.all(stop - start <= 21) and np.all(stop - start >= 2)


def test_sample_windows_deterministic_and_in_span():
    rng = np.random.default_rng(1)
    offsets, _ = random_log(rng, 40, 60)
    ends = lc.leave_one_out_ends(offsets, 1)
    a = lc.sample_windows(offsets, ends, window=8, per_seq=3, seed=5)
    b = lc.sample_windows(offsets, ends, window=8, per_seq=3, seed=5)
    c = lc.sample_windows(offsets, ends, window=8, per_seq=3, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    seq, start, stop = a
    eligible = np.flatnonzero(ends - offsets[:-1] >= 2)
    np.testing.assert_array_equal(seq, np.repeat(eligible, 3))
    assert np.all(stop >= offsets[seq] + 2) and np.all(stop <= ends[seq])
    np.testing.assert_array_equal(start, np.maximum(offsets[seq], stop - 9))
    # Uniform stops: every allowed stop of a long sequence shows up over many draws.
    many = lc.sample_windows(np.array([0, 12]), window=4, per_seq=2000, seed=0)[2]
    assert set(many.tolist()) == set(range(2, 13))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.integers(1, 10))
def test_gather_matches_reference(seed, batch, length):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 1000, 200).astype(np.int32)
    start = rng.integers(0, 200, batch)
    stop = np.minimum(200, start + rng.integers(0, 30, batch))
    expected = ref_gather(items, start, stop, length)
    np.testing.assert_array_equal(lc.gather(items, start, stop, length=length), expected)
    # Into a reused buffer full of stale values: every slot is overwritten, and out comes back.
    out = np.full((batch, length + 1), -5, np.int64)
    assert lc.gather(items, start, stop, length=length, out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_gather_big_batch_takes_the_parallel_path():
    # Over 2^20 values the rows are filled by the thread pool, below on the calling thread.
    rng = np.random.default_rng(3)
    items = rng.integers(1, 10**6, 50_000).astype(np.int32)
    start = rng.integers(0, 50_000, 5_300)
    stop = np.minimum(50_000, start + rng.integers(0, 300, 5_300))
    expected = ref_gather(items, start, stop, 200)
    np.testing.assert_array_equal(lc.gather(items, start, stop, length=200), expected)
    out = np.full(expected.shape, -1, np.int64)
    np.testing.assert_array_equal(lc.gather(items, start, stop, length=200, out=out), expected)


def test_gather_reads_memmapped_int32_and_pads():
    items = np.arange(1, 11, dtype=np.int32)
    out = lc.gather(items, np.array([0]), np.array([2]), length=3, pad=-1)
    np.testing.assert_array_equal(out, [[-1, -1, 1, 2]])
    assert out.dtype == np.int64 and out.flags.c_contiguous and out.flags.owndata is not None


def test_outputs_are_fresh_int64_arrays_without_copies():
    perm, offsets = lc.group(np.array([1, 0]), np.array([0, 0]))
    for a in (perm, offsets):
        assert a.dtype == np.int64 and a.flags.writeable
    # An int64 input is read in place: a view of a larger buffer works as long as it is contiguous.
    buf = np.arange(20, dtype=np.int64)
    assert lc.windows(buf[:1] * 0, window=2, stride=1)[0].size == 0


def test_empty_inputs_give_empty_outputs():
    e = np.zeros(0, np.int64)
    perm, offsets = lc.group(e, e)
    assert perm.size == 0 and offsets.tolist() == [0]
    assert lc.sessionize(np.array([0]), e, 5).tolist() == [0]
    assert all(x.size == 0 for x in lc.windows(np.array([0]), window=3, stride=1))
    assert lc.gather(e, e, e, length=4).shape == (0, 5)
    assert lc.kshift_rows(e, k=4, rows=3, seed=0).shape == (0, 4)
    assert lc.group([], [])[1].tolist() == [0]  # an empty Python list is no integers, not floats


# ---------------------------------------------------------------- k-shift


def splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@pytest.mark.parametrize("scheme", ["mix", "rotate", "rotate_signed"])
def test_kshift_rows_match_numpy_port(scheme):
    ids = np.arange(0, 5000, dtype=np.uint64)
    k, rows, seed = 8, 313, 11
    with np.errstate(over="ignore"):
        h = splitmix64(ids ^ splitmix64(np.array([seed], dtype=np.uint64)))
        cols = []
        for c in range(k):
            if scheme == "mix":
                key = splitmix64(np.array([0xC0FFEE + c], dtype=np.uint64)) | np.uint64(1)
                cols.append(splitmix64(h ^ key) % np.uint64(rows))
            elif scheme == "rotate":
                r = h if c == 0 else (h << np.uint64(c)) | (h >> np.uint64(64 - c))
                cols.append(r % np.uint64(rows))
            else:
                s = h.view(np.int64)
                r = s if c == 0 else (s << np.int64(c)) | (s >> np.int64(64 - c))
                cols.append(np.mod(r, rows))  # floor mod, non-negative
    want = np.stack([c.astype(np.int64) for c in cols], axis=1)
    np.testing.assert_array_equal(lc.kshift_rows(ids.astype(np.int64), k=k, rows=rows, seed=seed, scheme=scheme), want)


# ---------------------------------------------------------------- splits


def test_split_ends():
    offsets = np.array([0, 5, 6, 6, 8])
    np.testing.assert_array_equal(lc.leave_one_out_ends(offsets, 2), [3, 6, 6, 8])
    ts = np.array([1, 5, 9, 9, 10, 3, 4, 12])
    np.testing.assert_array_equal(lc.temporal_ends(offsets, ts, 9), [2, 6, 6, 7])


# ---------------------------------------------------------------- bad input


READ_ONLY_OUT = np.zeros((1, 3), np.int64)
READ_ONLY_OUT.flags.writeable = False


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lc.group([1, 2], [1]), r"ts: has length 1 but users has length 2"),
        (lambda: lc.group([1, -2], [1, 1]), r"users\[1\] = -2 is negative"),
        (lambda: lc.sessionize([1, 2], [0, 1], 5), r"offsets\[0\] is 1"),
        (lambda: lc.sessionize([0, 2, 1], [0, 1], 5), r"offsets: decreases at index 2"),
        (lambda: lc.sessionize([0, 1], [0, 1], 5), r"offsets: ends at 1 but there are 2 events"),
        (lambda: lc.sessionize([0, 3], [0, 2, 1], 5), r"ts: decreases within sequence 0 at index 2"),
        (lambda: lc.sessionize([0, 2], [0, 1], 0), r"gap: must be at least 1"),
        (lambda: lc.windows([0, 5], window=0, stride=1), r"window: must be at least 1"),
        (lambda: lc.windows([0, 5, 3, 9], window=2, stride=1), r"offsets: decreases at index 2: 3 after 5"),
        (lambda: lc.windows([0, 5, 3, 9], [5, 3, 9], window=2, stride=1), r"offsets: decreases at index 2"),
        (
            lambda: lc.sample_windows([0, 2**62, 0], window=2, seed=0, max_history=2**62),
            r"offsets: decreases at index 2",
        ),
        (lambda: lc.windows([0, 5], window=2, stride=0), r"stride: must be at least 1"),
        (lambda: lc.windows([0, 5], window=2, stride=1, min_len=1), r"min_len: must be at least 2"),
        (lambda: lc.windows([0, 5], window=2, stride=1, max_history=0), r"max_history"),
        (lambda: lc.windows([0, 5], [6], window=2, stride=1), r"ends\[0\] = 6 lies outside"),
        (lambda: lc.windows([0, 5, 9], [5], window=2, stride=1), r"ends: has length 1"),
        (lambda: lc.windows([0, 5], window=2, stride=1, regime="all"), r"regime: must be"),
        (lambda: lc.sample_windows([0, 5], window=2, per_seq=0, seed=0), r"per_seq"),
        (lambda: lc.gather([1, 2, 3], [0, 2], [1, 4], length=2), r"start: row 1: \[2, 4\)"),
        (lambda: lc.gather([1, 2, 3], [0], [1, 2], length=2), r"stop: has length 2"),
        (lambda: lc.gather([1, 2, 3], [0], [1], length=0), r"length"),
        (lambda: lc.gather([1, 2, 3], [0, 1], [1, 2], length=2**62), r"length: .* would not fit in memory"),
        # no rows, but a row stride in bytes that overflows (NumPy would crash on such an array)
        (
            lambda: lc.gather([1, 2, 3], np.zeros(0, np.int64), np.zeros(0, np.int64), length=2**62),
            r"length: .* would not fit",
        ),
        (lambda: lc.gather([1, 2, 3], [0], [1], length=2, out=np.zeros((1, 4), np.int64)), r"out has shape \(1, 4\)"),
        (lambda: lc.gather([1, 2, 3], [0, 0], [1, 1], length=2, out=np.zeros((3, 2), np.int64).T), r"C-contig"),
        (lambda: lc.gather([1, 2, 3], [0], [1], length=2, out=np.zeros((1, 3), np.int64)[:, ::-1]), r"C-contig"),
        (lambda: lc.gather([1, 2, 3], [0], [1], length=2, out=READ_ONLY_OUT), r"out is not writeable"),
        (lambda: lc.kshift_rows([1], k=0, rows=2, seed=0), r"k: must be at least 1"),
        (lambda: lc.kshift_rows([-1], k=1, rows=2, seed=0), r"ids\[0\] = -1 is negative"),
        (lambda: lc.kshift_rows([1], k=1, rows=2, seed=0, scheme="xor"), r"scheme"),
        (lambda: lc.temporal_ends([0, 2], [3, 1], 2), r"ts: decreases"),
        (lambda: lc.group(np.array([1, 2**63], dtype=np.uint64), [0, 0]), r"users\[1\] = .* does not fit"),
        (lambda: lc.group(np.arange(10)[::2], np.arange(5)), r"users must be contiguous"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        # valid arguments whose output (2^40 windows, 2^50 windows, 2^20 rows of 2^30) no machine holds
        (
            lambda: lc.windows([0, 2**40], window=200, stride=1),
            r"windows: the output needs .* GiB, more than the .* GiB of memory available now",
        ),
        (lambda: lc.sample_windows([0, 5], window=2, per_seq=2**50, seed=0), r"sample_windows: the output needs"),
        (
            lambda: lc.gather([1, 2, 3], np.zeros(2**20, np.int64), np.ones(2**20, np.int64), length=2**30),
            r"gather: the output needs",
        ),
    ],
)
def test_outputs_too_big_raise_memory_error(call, match):
    # MemoryError, not an aborted interpreter: sizes that follow from arguments can be absurd
    with pytest.raises(MemoryError, match=match):
        call()


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="MemAvailable is Linux's")
def test_an_output_just_over_the_available_memory_is_refused_before_it_is_allocated():
    """with overcommit, an output between the available and the total memory passed the
    guard (the allocation is granted) and the process was OOM-killed while filling it."""
    meminfo = Path("/proc/meminfo").read_text()
    available = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo)[1]) * 1024
    rows = 16
    length = (available + (512 << 20)) // (rows * 8)  # int64 [rows, length + 1]: 512 MiB over
    with pytest.raises(MemoryError, match=r"gather: the output needs .* of memory available now \(MemAvailable\)"):
        lc.gather([1, 2, 3], np.zeros(rows, np.int64), np.ones(rows, np.int64), length=length)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lc.group(np.array([1.0, 2.0]), [0, 0]), r"users must be an integer array, got dtype float64"),
        (lambda: lc.group(np.zeros((2, 2), np.int64), [0, 0]), r"users must be a 1-D array"),
        (lambda: lc.gather(np.array(["a"]), [0], [1], length=2), r"items must be an integer array"),
        (lambda: lc.gather([1, 2, 3], [0], [1], length=2, out=np.zeros((1, 3), np.int32)), r"out must be a 2-D int64"),
        (lambda: lc.gather([1, 2, 3], [0], [1], length=2, out=np.zeros(3, np.int64)), r"out must be a 2-D int64"),
    ],
)
def test_wrong_dtype_or_shape_raises_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


# Edge values for every integer argument: around 0, the int32/int64 limits and powers of two.
EDGE = st.sampled_from([0, 1, 2, 3, 5, 7, 64, -1, -2, 2**31, 2**32, 2**62, 2**63 - 1, -(2**63)])
SMALL = st.lists(EDGE, max_size=6).map(lambda v: np.array(v, np.int64))
OFFSETS = (
    st.lists(st.integers(0, 12), max_size=6).map(lambda n: np.concatenate([[0], np.cumsum(n)]).astype(np.int64)) | SMALL
)


@pytest.mark.parametrize(
    "name",
    [
        "group",
        "sessionize",
        "windows",
        "sample_windows",
        "session_windows",
        "gather",
        "kshift_rows",
        "leave_one_out_ends",
        "temporal_ends",
    ],
)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_extreme_arguments_raise_errors_never_crash(name, data):
    # Any argument a caller can pass gets a result or ValueError / TypeError / MemoryError /
    # OverflowError (a Python int beyond int64): never a panic, an abort or a crash. A crash
    # kills pytest, so this fails loudly too. (It found gather(length=2**62) with no rows
    # crashing NumPy: a row stride beyond isize.)
    d = data.draw
    ends = d(st.none() | SMALL)
    hist = d(st.none() | EDGE)
    calls = {
        "group": lambda: lc.group(d(SMALL), d(SMALL)),
        "sessionize": lambda: lc.sessionize(d(OFFSETS), d(SMALL), d(EDGE)),
        "windows": lambda: lc.windows(
            d(OFFSETS),
            ends,
            window=d(EDGE),
            stride=d(EDGE),
            min_len=d(EDGE),
            max_history=hist,
            regime=d(st.sampled_from(["sliding", "last"])),
        ),
        "sample_windows": lambda: lc.sample_windows(
            d(OFFSETS),
            ends,
            window=d(EDGE),
            per_seq=d(EDGE),
            min_len=d(EDGE),
            max_history=hist,
            seed=d(st.integers(0, 2**64 - 1)),
        ),
        "session_windows": lambda: lc.session_windows(
            d(OFFSETS), d(OFFSETS | SMALL), ends, window=d(EDGE), max_history=hist
        ),
        "gather": lambda: lc.gather(d(SMALL), d(SMALL), d(SMALL), length=d(EDGE), pad=d(EDGE)),
        "kshift_rows": lambda: lc.kshift_rows(
            d(SMALL),
            k=d(EDGE),
            rows=d(EDGE),
            seed=d(st.integers(0, 2**64 - 1)),
            scheme=d(st.sampled_from(["mix", "rotate", "rotate_signed"])),
        ),
        "leave_one_out_ends": lambda: lc.leave_one_out_ends(d(OFFSETS), d(EDGE), d(EDGE)),
        "temporal_ends": lambda: lc.temporal_ends(d(OFFSETS), d(SMALL), d(EDGE)),
    }
    try:
        calls[name]()
    except (ValueError, TypeError, MemoryError, OverflowError):
        pass


# ---------------------------------------------------------------- the stub


def stub_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(stubdoc.STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_the_stub_declares_every_binding_with_its_parameters():
    """Each function of _core.pyi exists in the extension and vice versa, with the parameter names and
    kinds (positional or keyword-only) of the binding's __text_signature__."""
    stub = stub_functions()
    bindings = {name for name in dir(_core) if not name.startswith("_")}
    assert set(stub) == bindings
    for name, node in stub.items():
        declared = [(a.arg, False) for a in node.args.posonlyargs + node.args.args]
        declared += [(a.arg, True) for a in node.args.kwonlyargs]
        params = inspect.signature(getattr(_core, name)).parameters.values()
        assert declared == [(q.name, q.kind == q.KEYWORD_ONLY) for q in params], name


def test_the_stub_docstrings_are_the_bindings():
    """Written once, in the `///` comments of rust/python*.rs; `python -m longrec_core.stubdoc` copies them."""
    text = stubdoc.STUB.read_text()
    assert ast.get_docstring(ast.parse(text)) == inspect.cleandoc(_core.__doc__)
    for name, node in stub_functions().items():
        assert ast.get_docstring(node) == inspect.cleandoc(getattr(_core, name).__doc__), name
    assert stubdoc.with_docs(text, _core) == text  # and regenerating would not change the file


def test_available_memory_is_at_most_the_machines_total():
    have = lc.available_memory()
    if not Path("/proc/meminfo").exists():
        assert have is None
        return
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert isinstance(have, int) and 0 < have <= total
