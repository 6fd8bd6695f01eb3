"""longrec: long-sequence recommendation with sliding windows.

The data core (compiled from Rust) works on one stored event array grouped by user and
describes training examples as pointers into it::

    import numpy as np, longrec_core as lc
    perm, offsets = lc.group(users, ts)                 # (user, time) order + CSR offsets
    seq, start, stop = lc.windows(offsets, window=200, stride=64)
    batch = lc.gather(items[perm], start[:256], stop[:256], length=200)   # (256, 201)

This package and its core install with numpy alone (`pip install longrec`); so do the torch-free
modules ``.choices``, ``.synthetic``, ``.schedule``, ``.train_flags``, ``.frontier`` and ``.cli``. The
training pieces come with the `train` extra (torch, polars, rich, matplotlib) and are imported on
demand: ``longrec_core.datadir`` (the data dir format), ``.prepare`` (a log to a data dir),
``.readers`` (input formats), ``.shards`` (sharded data dirs), ``.model`` (SASRec, k-shift),
``.kernels`` (the ops the model trains with), ``.losses``,
``.metrics`` (full-catalogue ranking), ``.recommend`` (top-k items for a history:
``Recommender.load(run).topk(histories, k)``).
"""

__version__ = "0.1.0"  # equal to pyproject.toml's [project] version (tests/test_packaging.py)

from longrec_core._core import (
    available_memory,
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
    "__version__",
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
