"""Training examples for one epoch: which windows (per regime), which of their targets count,
and a background thread that materializes shuffled batches with the core's `gather`.

Windows are pointers (start, stop) into the data dir's one event array and never reach past a
user's training end, so validation and test events are never inputs or targets.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

import longrec_core as lc
from longrec_core.choices import REGIMES


@dataclass
class EpochWindows:
    """One epoch's examples in core order (by user, then time). A window's targets are its events
    from first_target on (events before it are context only); those at an event index >= fresh_stop
    are also targets of a later window of the same user."""

    seq: np.ndarray  # (W,) user of each window
    start: np.ndarray  # (W,) first event
    stop: np.ndarray  # (W,) one past the last event
    fresh_stop: np.ndarray  # (W,) targets before this index are covered by no later window
    first_target: np.ndarray  # (W,) the first event that is a target: start + 1, or a session start

    def __len__(self) -> int:
        return len(self.start)

    def n_targets(self, fresh_only: bool) -> np.ndarray:
        """(W,) targets each window contributes to the loss, as `make_batch` marks them: every
        event after its first (before fresh_stop if fresh_only). A window never holds more than
        the `window + 1` events a batch row keeps, so no cut applies."""
        end = np.minimum(self.stop, self.fresh_stop) if fresh_only else self.stop
        return np.maximum(0, end - self.first_target)


def regime_of(regime: str, epoch: int, mixed_epochs: int) -> str:
    """The window regime used in `epoch`: `mixed` is `last` for mixed_epochs epochs, then `sliding`."""
    if regime == "mixed":
        return "last" if epoch < mixed_epochs else "sliding"
    return regime


def epoch_windows(
    offsets: np.ndarray,
    train_end: np.ndarray,
    *,
    regime: str,
    window: int,
    stride: int = 1,
    min_len: int = 2,
    max_history: int | None = None,
    per_seq: int = 1,
    seed: int = 0,
    sessions: np.ndarray | None = None,
) -> EpochWindows:
    """The windows of one epoch for a concrete regime (last | sliding | random | session; resolve
    `mixed` with `regime_of` first). `seed` only matters for `random`: pass one per epoch.
    `session` needs the data dir's `sessions` offsets: each session's training events are the
    targets of the windows that end at the session's end (`longrec_core.session_windows`), with the
    events before them as context, so every target comes once and `stride`/`min_len` do not apply."""
    if regime == "session":
        if sessions is None:
            raise ValueError("the session regime needs the session offsets (sessions.npy of the data dir)")
        seq, start, stop, first = lc.session_windows(
            offsets, sessions, train_end, window=window, max_history=max_history
        )
        return EpochWindows(seq, start, stop, stop.copy(), first)
    if regime == "random":
        seq, start, stop = lc.sample_windows(
            offsets, train_end, window=window, per_seq=per_seq, min_len=min_len, max_history=max_history, seed=seed
        )
    elif regime in ("last", "sliding"):
        seq, start, stop = lc.windows(
            offsets, train_end, window=window, stride=stride, min_len=min_len, max_history=max_history, regime=regime
        )
    else:  # mixed is resolved by regime_of; anything else is not a regime
        concrete = ", ".join(r for r in REGIMES if r != "mixed")
        raise ValueError(f"regime must be one of {concrete} here, got {regime!r}")
    fresh_stop = stop.copy()
    # Windows of one user come in time order (core guarantee); a later window's targets are the
    # events from its start + 1 on, so this window's targets from there on are not fresh.
    # Random windows have no order, so every target counts.
    if regime != "random":
        nxt = np.flatnonzero(seq[:-1] == seq[1:])
        fresh_stop[nxt] = np.minimum(stop[nxt], start[nxt + 1] + 1)
    return EpochWindows(seq, start, stop, fresh_stop, start + 1)


def make_batch(
    items: np.ndarray,
    types: np.ndarray | None,
    w: EpochWindows,
    idx: np.ndarray,
    window: int,
    fresh_only: bool,
    trim: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(inputs, targets, types) for windows `idx`: (B, T) each, right-aligned, 0 = padding.
    A target is 0 (never counted) where its input is padding and, with fresh_only, where a later
    window covers it. T is `window`, or with `trim` the longest window of this batch: the columns
    left of it are padding in every row, and since the model counts positions from the right end,
    dropping them changes no output and saves their compute (as a peer's pad-to-longest collate does)."""
    start, stop = w.start[idx], w.stop[idx]
    width = window + 1
    if trim and len(idx):
        width = max(2, int(np.minimum(stop - start, window + 1).max()))
    seqs = torch.from_numpy(lc.gather(items, start, stop, length=width - 1))  # (B, T+1)
    targets = seqs[:, 1:].clone()  # (B, T); column j predicts event stop - T + j
    targets[seqs[:, :-1] == 0] = 0  # a window's first event has no input before it: not a target
    first = w.first_target[idx]
    context_only = bool(np.any(first > start + 1))  # session windows: earlier sessions are context
    if fresh_only or context_only:
        event = stop[:, None] + np.arange(1 - width, 0)[None, :]  # (B, T) event index of each target
        if fresh_only:
            targets[torch.from_numpy(event >= w.fresh_stop[idx, None])] = 0
        if context_only:
            targets[torch.from_numpy(event < first[:, None])] = 0
    types_in = None
    if types is not None:
        types_in = torch.from_numpy(lc.gather(types, start, stop, length=width - 1)[:, :-1])
    return seqs[:, :-1], targets, types_in


def window_prefix(
    items: np.ndarray, offsets: np.ndarray, seq: np.ndarray, start: np.ndarray, events: int
) -> torch.Tensor:
    """(B, events) the `events` events before each window's first event, left-padded with 0: the
    input of the model's history summary. They are pointers into the same event array as the
    windows: events [max(first event of the user, start - events), start), so a summary reads
    only events before its window, never one at or after it (and so never a target the window
    may not see)."""
    lo = np.maximum(np.asarray(offsets)[seq], start - events)
    return torch.from_numpy(lc.gather(items, lo, start, length=events - 1))  # (B, events)


def shuffled_order(
    n: int, seed: int, epoch: int, batch_size: int, rank: int = 0, world: int = 1, lengths: np.ndarray | None = None
) -> np.ndarray:
    """This process's windows for one epoch, in batch order. The permutation depends only on
    (seed, epoch). Under data parallelism global batch k is the k-th run of batch_size * world
    windows, split evenly across ranks, so the examples of each optimizer step are exactly those a
    single process with batch_size * world would see (up to world - 1 windows dropped per epoch).
    With `lengths` (events per window), global batches are grouped by length (`group_by_length`)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if lengths is not None:
        order = group_by_length(order, lengths, batch_size * world, np.random.default_rng([seed, epoch, 1]))
    if world == 1:
        return order
    order = order[: n - n % world]
    g = batch_size * world
    parts = []
    for s in range(0, len(order), g):
        chunk = order[s : s + g]
        k = len(chunk) // world
        parts.append(chunk[rank * k : (rank + 1) * k])
    return np.concatenate(parts) if parts else order


LENGTH_POOL = 64  # batches per pool when grouping by length


def group_by_length(order: np.ndarray, lengths: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """`order` regrouped so each batch holds windows of similar length: every run of LENGTH_POOL
    batches is sorted by window length and cut into batches, then the full batches are shuffled
    (a short last batch stays last). A batch is trimmed to its longest window (`make_batch`), so
    this removes most padding when many windows are shorter than the context, as sliding windows
    with a small stride are. The epoch still visits every window once; what changes is which
    windows share a batch (similar lengths, so similar positions in their users' histories)."""
    pool_of = np.arange(len(order)) // (LENGTH_POOL * batch)
    grouped = order[np.lexsort((lengths[order], pool_of))]  # by pool, then length (stable)
    full = len(grouped) // batch * batch
    batches = grouped[:full].reshape(-1, batch)[rng.permutation(full // batch)]
    return np.concatenate([batches.ravel(), grouped[full:]])


def n_batches(n_windows: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps in an epoch of n_windows windows (the same on every rank)."""
    return math.ceil((n_windows - n_windows % world) / (batch_size * world))


def iter_batches(
    items: np.ndarray,
    types: np.ndarray | None,
    w: EpochWindows,
    order: np.ndarray,
    *,
    batch_size: int,
    window: int,
    fresh_only: bool = False,
    skip: int = 0,
    prefetch: int = 8,
    offsets: np.ndarray | None = None,
    summary_events: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """Batches (inputs, targets, types, prefix) of `order` (window indices) from batch `skip` on,
    built in a background thread (gather releases the GIL) so the training loop never waits on
    Python per-example work. With `summary_events` (and the data dir's `offsets`), prefix is each
    window's `window_prefix`; otherwise None."""
    if summary_events and offsets is None:
        raise ValueError("summary_events needs the offsets of the event array")
    total = math.ceil(len(order) / batch_size)
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        try:
            for b in range(skip, total):
                if stop.is_set():
                    return
                idx = order[b * batch_size : (b + 1) * batch_size]
                prefix = None
                if summary_events:
                    prefix = window_prefix(items, offsets, w.seq[idx], w.start[idx], summary_events)
                q.put((*make_batch(items, types, w, idx, window, fresh_only), prefix))
        except BaseException as e:  # hand the failure to the consumer
            q.put(e)
        q.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (batch := q.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()  # the consumer broke off early: let the producer finish
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)
