"""train.py --tensorboard DIR: the per-epoch figures of log.jsonl as TensorBoard scalars.

Each validated epoch's record (longrec_core's log.jsonl line) becomes scalars at step = its epoch
(counted from 1): train/loss, train/seconds, train/tokens_per_second, train/lr, ... and
valid/NDCG@10, valid/HR@10, ... for every validation metric. Off by default; tensorboard is an
optional package (`pip install tensorboard`, in the dev extra): without it, --tensorboard exits 2
before any training.

    tensorboard --logdir runs/tb
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# log.jsonl fields drawn under train/ (besides the validation metrics, drawn under valid/)
TRAIN_SCALARS = (
    "loss",
    "train_seconds",
    "eval_seconds",
    "tokens",
    "examples",
    "tokens_per_second",
    "loader_wait_share",
    "peak_memory_bytes",
    "lr",
)


class TensorBoard:
    """A SummaryWriter fed with log.jsonl's records, flushed after each, so a stopped run loses nothing."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["epoch"])
        for key in TRAIN_SCALARS:
            if isinstance(record.get(key), (int, float)):
                self.writer.add_scalar(f"train/{key}", record[key], step)
        for name, value in (record.get("valid") or {}).items():
            self.writer.add_scalar(f"valid/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
