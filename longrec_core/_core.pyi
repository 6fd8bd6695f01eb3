"""Type stubs for the compiled data core (rust/python.rs). Integer arrays of any width are
accepted (anything numpy.asarray turns into a 1-D integer array); they must be C-contiguous.
Outputs are int64 arrays handed over without a copy. Bad input raises ValueError naming the
argument and the first offending index (so do a non-contiguous array and an ``out`` of the
wrong shape); an array of a non-integer dtype or not 1-D raises TypeError; valid arguments
whose output cannot be allocated (say, 2^40 windows) raise MemoryError."""

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "dropout_mask",
    "gather",
    "gelu_dropout",
    "gelu_dropout_backward",
    "group",
    "kshift_rows",
    "leave_one_out_ends",
    "sample_windows",
    "session_windows",
    "sessionize",
    "temporal_ends",
    "windows",
]

_IntArray = npt.ArrayLike
_I64 = npt.NDArray[np.int64]

def group(users: _IntArray, ts: _IntArray) -> tuple[_I64, _I64]:
    """Stable (user, time) order ``perm`` of a raw log and CSR ``offsets`` (length U+1) of
    its distinct users in increasing id order; ties in time keep input order."""

def sessionize(offsets: _IntArray, ts: _IntArray, gap: int) -> _I64:
    """Session offsets: a new session at each sequence start and wherever consecutive
    events of one sequence are more than ``gap`` apart. Sessions never cross sequences."""

def windows(
    offsets: _IntArray,
    ends: _IntArray | None = None,
    *,
    window: int,
    stride: int,
    min_len: int = 2,
    max_history: int | None = None,
    regime: Literal["sliding", "last"] = "sliding",
) -> tuple[_I64, _I64, _I64]:
    """End-anchored training windows ``(seq, start, stop)`` as pointers into the event array:
    stop = b, b - stride, ... while stop - a >= min_len; start = max(a, stop - window - 1).
    The three arrays are views of one buffer (one allocation is cheaper than three), which is
    freed when the last of them is; copy one to keep it alone."""

def sample_windows(
    offsets: _IntArray,
    ends: _IntArray | None = None,
    *,
    window: int,
    per_seq: int = 1,
    min_len: int = 2,
    max_history: int | None = None,
    seed: int,
) -> tuple[_I64, _I64, _I64]:
    """``per_seq`` seeded random windows per sequence: stop uniform in [a + min_len, b]."""

def session_windows(
    offsets: _IntArray,
    sessions: _IntArray,
    ends: _IntArray | None = None,
    *,
    window: int,
    max_history: int | None = None,
) -> tuple[_I64, _I64, _I64, _I64]:
    """Windows that end at session ends: ``(seq, start, stop, first_target)``. Every training
    event of a sequence but its first is the target of exactly one window, inside its own
    session; events [start, first_target) are context only. A session [s, e) (clipped to the
    training end b) gives stop = e, e - window, ... while stop > t0 = max(s, a + 1), with
    first_target = max(t0, stop - window) and start = max(a, stop - window - 1). ``sessions``
    must start a session at every sequence start (as ``sessionize`` does)."""

def gather(
    items: _IntArray,
    start: _IntArray,
    stop: _IntArray,
    *,
    length: int,
    pad: int = 0,
    out: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """A right-aligned, left-padded ``[B, length + 1]`` batch of ``items[start[b]:stop[b]]``
    (a longer slice keeps its last ``length + 1`` items); written into ``out`` (C-contiguous
    int64 of that shape) and returned when given."""

def kshift_rows(
    ids: _IntArray, *, k: int, rows: int, seed: int, scheme: Literal["mix", "rotate", "rotate_signed"] = "mix"
) -> npt.NDArray[np.int64]:
    """The ``[n, k]`` k-shift table rows of each id."""

def leave_one_out_ends(offsets: _IntArray, holdout: int = 1, min_history: int = 1) -> _I64:
    """Per sequence ``b - holdout`` when at least ``min_history`` events remain before it, else ``b``."""

def temporal_ends(offsets: _IntArray, ts: _IntArray, cutoff: int) -> _I64:
    """Per sequence the first index whose time is at or after ``cutoff`` (``b`` if none)."""

def dropout_mask(out: npt.NDArray[np.float32] | npt.NDArray[np.uint16], *, p: float, seed: int) -> None:
    """Fill ``out`` (C-contiguous, writable) with an inverted-dropout mask: 0 with probability ``p``
    (rounded to 1/65536), else ``1 / (1 - p)``; depends only on seed and index. float32, or uint16
    holding bfloat16 bits (``t.view(torch.uint16).numpy()`` of a bfloat16 tensor ``t``); both
    drop the same elements."""

def gelu_dropout(
    x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    *,
    p: float,
    seed: int,
) -> None:
    """``out = gelu(x) * dropout_mask(p=p, seed=seed)`` in one pass (torch's exact GELU; in
    float32 within 3e-7 * (1 + |x|) of the exact value); ``x`` and ``out`` the same shape and
    dtype (float32, or uint16 bfloat16 bits), C-contiguous, ``out`` writable and not ``x``.
    ``p=0`` is GELU alone."""

def gelu_dropout_backward(
    x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    grad_out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    grad_x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    *,
    p: float,
    seed: int,
) -> None:
    """The gradient of ``gelu_dropout`` with the same ``p`` and ``seed``: ``grad_x = grad_out *
    mask * gelu'(x)``, the mask recomputed from the seed; all three the same shape and dtype."""
