"""longrec: long-sequence recommendation with sliding windows.

The data core (compiled from Rust) works on one stored event array grouped by user and
describes training examples as pointers into it::

    import numpy as np, longrec_core as lc
    perm, offsets = lc.group(users, ts)                 # (user, time) order + CSR offsets
    seq, start, stop = lc.windows(offsets, window=200, stride=64)
    batch = lc.gather(items[perm], start[:256], stop[:256], length=200)   # (256, 201)

Shared Python pieces live in submodules imported on demand (they need torch):
``longrec_core.data`` (data dirs), ``.readers`` (input formats), ``.shards`` (sharded data dirs),
``.model`` (SASRec, k-shift), ``.losses``, ``.metrics`` (full-catalogue ranking), ``.cli`` (stage helpers).
"""

from longrec_core._core import (
    dropout_mask,
    gather,
    gelu_dropout,
    gelu_dropout_backward,
    group,
    kshift_rows,
    leave_one_out_ends,
    sample_windows,
    session_windows,
    sessionize,
    temporal_ends,
    windows,
)

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
