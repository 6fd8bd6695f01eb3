"""The learning-rate schedule of train.py: linear warm-up, then constant or cosine decay.

Pure functions of step counts (no torch), so the rule is tested on its own.
"""

from __future__ import annotations

import math

from longrec_core.choices import SCHEDULES

WARMUP_SHARE = 0.1  # default warm-up: this share of the first epoch's steps ...
WARMUP_CAP = 100  # ... and never more than this many steps


def default_warmup_steps(first_epoch_steps: int) -> int:
    """Warm-up steps when none are given: 10% of the first epoch, at most 100, at least 1.

    A fixed 100 steps is two whole epochs of ml-1m at batch 128 (48 steps an epoch), and measured
    runs learn markedly slower for it; on large data 100 steps are a sliver of the first epoch.
    """
    return max(1, min(WARMUP_CAP, math.ceil(WARMUP_SHARE * first_epoch_steps)))


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based) of `total`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
