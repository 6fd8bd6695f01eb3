# Type stubs of the compiled core. The signatures are written here; the docstrings are copied from the
# /// comments in rust/python.rs and rust/python/kernels.rs: after editing one, rebuild the extension and
# run `python -m longrec_core.stubdoc` (tests/test_core.py fails while they differ).

"""The compiled core of longrec (rust/): the data core's functions over integer arrays, and the
training kernels over float arrays.

Integer arrays of any width are accepted (anything ``numpy.asarray`` turns into a 1-D integer
array); they must be C-contiguous. Outputs are int64 arrays handed over without a copy. Bad input
raises ValueError naming the argument and the first offending index (so do a non-contiguous array
and an ``out`` of the wrong shape); an array of a non-integer dtype or not 1-D raises TypeError;
valid arguments whose output cannot be allocated (say, 2^40 windows) raise MemoryError."""

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "available_memory",
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
    """Stable (user, time) order of a raw log and the CSR offsets of its users.

    Returns ``(perm, offsets)``: ``users[perm]`` and ``ts[perm]`` are sorted by user, then
    time, ties in time keeping input order; the k-th smallest distinct user id owns
    ``perm[offsets[k]:offsets[k+1]]`` (``offsets`` has U + 1 entries for U distinct users). Users
    may be any non-negative integers."""

def sessionize(offsets: _IntArray, ts: _IntArray, gap: int) -> _I64:
    """Session offsets over the grouped events: a new session at every sequence start and
    wherever consecutive events of one sequence are more than ``gap`` time units apart."""

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
    """Training windows as pointers ``(seq, start, stop)`` into the event array.

    For sequence u with usable events [a, b) (b = ``ends[u]`` when given; a raised to
    ``b - max_history`` when given), windows end at stop = b, b - stride, ... while
    stop - a >= min_len, and start = max(a, stop - window - 1): at most ``window + 1``
    events, inputs the first stop-start-1, targets the same shifted by one. ``regime="last"``
    keeps only stop = b. Windows of one sequence come in time order. The three arrays are
    views of one buffer (one allocation is cheaper than three), freed when the last of them is;
    copy one to keep it alone."""

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
    """``per_seq`` random windows per sequence: stop uniform in [a + min_len, b],
    start = max(a, stop - window - 1). The same seed gives the same windows on any machine
    and any number of threads."""

def session_windows(
    offsets: _IntArray,
    sessions: _IntArray,
    ends: _IntArray | None = None,
    *,
    window: int,
    max_history: int | None = None,
) -> tuple[_I64, _I64, _I64, _I64]:
    """Windows that end at session ends: each training event of a sequence (but its first) is the
    target of exactly one window, inside its own session, with the events before it as context.

    Returns ``(seq, start, stop, first_target)``: window i is the slice [start, stop) of the
    event array; its targets are the events [first_target, stop) and the events before
    first_target are context only. A session [s, e) (clipped to the training end) gives windows
    stop = e, e - window, ... while stop > max(s, a + 1), first_target = max(s, a + 1, stop -
    window), start = max(a, stop - window - 1). ``sessions`` are offsets over the same events
    that start a session at every sequence start (``sessionize`` gives them)."""

def gather(
    items: _IntArray,
    start: _IntArray,
    stop: _IntArray,
    *,
    length: int,
    pad: int = 0,
    out: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Materialize a batch: row b holds ``items[start[b]:stop[b]]`` right-aligned in a
    ``[B, length + 1]`` int64 array, left-padded with ``pad``; a longer slice keeps its last
    ``length + 1`` events. ``items`` may be any integer width (int32 from a data dir is read
    in place). With ``out`` (a C-contiguous int64 ``[B, length + 1]`` array) the batch is
    written there and ``out`` is returned, so a loop can reuse one buffer. Batches of 2^20
    values or more are filled by all cores; smaller ones on the calling thread, where waking
    the thread pool would cost more than it saves. The GIL is released either way."""

def kshift_rows(
    ids: _IntArray, *, k: int, rows: int, seed: int, scheme: Literal["mix", "rotate", "rotate_signed"] = "mix"
) -> npt.NDArray[np.int64]:
    """k-shift row indices ``[n, k]`` of a table with ``rows`` rows for each id.

    h = splitmix64(id ^ splitmix64(seed)) as unsigned 64-bit. ``scheme="mix"``:
    row_c = splitmix64(h ^ K_c) mod rows with K_c = splitmix64(0xC0FFEE + c) | 1;
    ``"rotate"``: rotl64(h, c) mod rows; ``"rotate_signed"``: the paper code's signed
    rotation, kept to measure its collisions."""

def leave_one_out_ends(offsets: _IntArray, holdout: int = 1, min_history: int = 1) -> _I64:
    """Leave-``holdout``-out ends per sequence: ``b - holdout`` when the sequence keeps at
    least ``min_history`` events before it, else ``b`` (too short: all in training)."""

def temporal_ends(offsets: _IntArray, ts: _IntArray, cutoff: int) -> _I64:
    """Temporal ends per sequence: the first index whose time is at or after ``cutoff``
    (the sequence end when there is none)."""

def available_memory() -> int | None:
    """Bytes of memory this process can still fill without swapping or being killed: Linux's
    MemAvailable (free memory plus the caches it can drop), at most what the cgroup's memory limit
    leaves; None where it cannot be told. The core checks its large outputs against the same figure."""

def dropout_mask(out: npt.NDArray[np.float32] | npt.NDArray[np.uint16], *, p: float, seed: int) -> None:
    """Fill ``out`` (any shape, C-contiguous, writable) with an inverted-dropout mask: 0 where an
    element is dropped (probability ``p``, rounded to 1/65536), else ``1 / (1 - p)``. ``out`` is
    float32, or uint16 holding bfloat16 bit patterns (NumPy has no bfloat16; pass
    ``torch_bf16_tensor.view(torch.uint16).numpy()``). The mask depends only on ``seed`` and the
    element index: both types drop the same elements."""

def gelu_dropout(
    x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    *,
    p: float,
    seed: int,
) -> None:
    """``out = gelu(x) * mask`` in one pass that never stores the mask: torch's exact GELU
    (``nn.GELU()``; in float32 within 3e-7 * (1 + |x|) of the exact value) and an inverted dropout
    with ``dropout_mask(p=p, seed=seed)``'s mask. ``x`` and ``out``: the same shape and dtype
    (float32, or uint16 bfloat16 bits as in ``dropout_mask``), C-contiguous; ``out`` writable and
    not ``x``. ``p=0`` is GELU alone."""

def gelu_dropout_backward(
    x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    grad_out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    grad_x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    *,
    p: float,
    seed: int,
) -> None:
    """The gradient of ``gelu_dropout(x, out, p=p, seed=seed)``: writes ``grad_out * mask *
    gelu'(x)`` into ``grad_x``, the mask recomputed from the seed. ``grad_out`` and ``grad_x``: the
    same shape and dtype as ``x``; ``grad_x`` writable and not an input."""
