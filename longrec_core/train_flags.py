"""train.py's flags, declared once: train.py builds its parser with `add_train_flags`, and
frontier.py parses the flags it passes through to every run with the same declaration, so a
misspelt flag or a bad choice stops a grid before any run. No torch: frontier.py stays quick.

    p = cli.ArgumentParser(); add_train_flags(p); args = p.parse_args(); check_settings(args)
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from longrec_core import cli
from longrec_core.choices import (
    DEVICES,
    FILTER_SEEN_CHOICES,
    ITEM_EMBS,
    KSHIFT_OPTIMIZERS,
    KSHIFT_ROW_SOURCES,
    KSHIFT_SCHEMES,
    LOSSES,
    PRECISIONS,
    REGIMES,
    SAMPLERS,
    SCHEDULES,
    TARGETS,
)

GROUPS = ("input and output", "model", "windows", "loss", "optimization", "run")  # --help headings, in order


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Declare every train.py flag on `p` (name, type, default, choices, help), grouped by heading."""
    for title, add in zip(
        GROUPS, (_io_flags, _model_flags, _windows_flags, _loss_flags, _optimization_flags, _run_flags)
    ):
        add(p.add_argument_group(title))


def train_parser(**kwargs: Any) -> cli.ArgumentParser:
    """A parser of train.py's flags alone (exact names only: no abbreviations); `kwargs` go to argparse."""
    p = cli.ArgumentParser(allow_abbrev=False, **kwargs)
    add_train_flags(p)
    return p


def train_defaults() -> dict[str, Any]:
    """{dest: default} of every train.py flag (`window` -> 200)."""
    return vars(train_parser().parse_args([]))


def flag_names(p: argparse.ArgumentParser) -> set[str]:
    """Every option string `p` knows (`--window`, `-h`, ...)."""
    return {name for action in p._actions for name in action.option_strings}


def _io_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--data",
        default=None,
        help="data dir from prep.py; None = its path from stdin when piped, else data/demo (made on first use)",
    )
    g.add_argument("--out", default=None, help="run dir to write; None = a fresh dir under runs/")
    g.add_argument(
        "--resume",
        default=None,
        help="run dir to continue from its ckpt.pt (its settings win, except the run-length flags)",
    )
    g.add_argument(
        "--config",
        default=None,
        help="TOML (or JSON) file of settings whose keys are these flags (a run's config.json is one); flags "
        "given here win over it (longrec_core/train_config.py)",
    )


def _model_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--window", type=int, default=200, help="context length T: inputs per example (the model's max_len)")
    g.add_argument("--dim", type=int, default=64, help="embedding and hidden width d")
    g.add_argument("--layers", type=int, default=2, help="transformer blocks")
    g.add_argument("--heads", type=int, default=2, help="attention heads (must divide --dim)")
    g.add_argument("--ffn", type=int, default=256, help="feed-forward width of each block")
    g.add_argument("--dropout", type=float, default=0.2, help="dropout on embeddings, attention and residuals")
    g.add_argument(
        "--item-emb",
        choices=ITEM_EMBS,
        default="full",
        help="full N x d table, the k-shift shared table, lowrank: an N x r table (r = dim // "
        "--kshift-compression) times a learned r x d projection, k-shift's memory with a row per item, or "
        "codes (RecJPQ): each item has --code-subspaces codes assigned from the training events before "
        "training (an SVD of the user x item matrix, longrec_core/codes.py) and its vector concatenates the "
        "d/m-wide row each code picks in its sub-table of --code-centroids rows",
    )
    g.add_argument("--kshift-k", type=int, default=8, help="k-shift: rows summed per item")
    g.add_argument(
        "--emb-compression",
        "--kshift-compression",
        dest="kshift_compression",
        type=float,
        default=16,
        help="item embedding memory over the full table's: k-shift table rows P = ceil(N / compression) "
        "(below 1: more rows than items, e.g. 0.87 for the paper code's P = 1.15 N); lowrank: width "
        "r = dim // compression",
    )
    g.add_argument(
        "--kshift-scheme",
        choices=KSHIFT_SCHEMES,
        default="mix",
        help="k-shift row scheme (rotate_signed = the paper code's bug)",
    )
    g.add_argument(
        "--kshift-seed",
        type=int,
        default=0,
        help="k-shift: seed of the item hash; codes: seed of the code assignment and of the hashed codes of "
        "items without a training event",
    )
    g.add_argument(
        "--kshift-head",
        type=int,
        default=0,
        help="k-shift: items 1..H (the most frequent: prep.py numbers items by training frequency) get exact "
        "rows of their own, H x d more parameters; the others keep their hashed rows",
    )
    g.add_argument(
        "--kshift-weights",
        action="store_true",
        help="k-shift: sum each item's k rows with k learned weights (a P x k table, an item's row picked by "
        "a second hash of its id; hash embeddings) instead of dividing by sqrt(k)",
    )
    g.add_argument(
        "--kshift-rows",
        choices=KSHIFT_ROW_SOURCES,
        default="stored",
        help="k-shift: stored = an [N+1, k] int32 row buffer (4k bytes per item); computed = hash each "
        "batch's ids with the core on the CPU (no buffer; on CUDA a device sync per forward); codes = shift c "
        "takes row c * C + code[item, c] of a table of k * C rows (C = --code-centroids; --kshift-compression "
        "is not used), the codes assigned from the training events as for --item-emb codes (k bytes per item)",
    )
    g.add_argument(
        "--kshift-optimizer",
        choices=KSHIFT_OPTIMIZERS,
        default="adamw",
        help="k-shift: the shared table's optimizer. adamw = dense gradient and two moments (16 bytes per "
        "value with the value); rowwise = sparse gradient and one second moment and step count per row "
        "(8 bytes a row), no momentum: for catalogues whose AdamW state would not fit (longrec_core.optim)",
    )
    g.add_argument(
        "--code-subspaces",
        type=int,
        default=None,
        help="codes: codes per item m (SVD components; must divide --dim: sub-embeddings d/m wide); "
        "None = 8, and --kshift-k with --kshift-rows codes (one code per shift)",
    )
    g.add_argument(
        "--code-centroids",
        type=int,
        default=256,
        help="codes and --kshift-rows codes: values of each code (1..65536; 1 byte per code up to 256, else 2): "
        "each sub-table has this many rows, so the tables hold centroids x d floats (codes) or k x centroids x d "
        "(k-shift) whatever the catalogue",
    )


def _windows_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--regime",
        choices=REGIMES,
        default="sliding",
        help="last: one window per user at the training end; sliding: all end-anchored windows; "
        "mixed: last for --mixed-epochs then sliding; random: --per-seq sampled windows per user per epoch; "
        "session: windows ending at each session's end, whose targets are that session's events "
        "(sessions.npy; prep.py --session-gap)",
    )
    g.add_argument("--stride", type=int, default=64, help="sliding: distance between consecutive window ends")
    g.add_argument(
        "--max-history", type=int, default=None, help="sliding: only the last H training events of a user make windows"
    )
    g.add_argument(
        "--summary-events",
        type=int,
        default=0,
        help="history before the window: the model also reads this many events before each window's first "
        "input, in training and in prediction, mean-pooled into --summary-tokens extra inputs (0 = off)",
    )
    g.add_argument(
        "--summary-tokens",
        type=int,
        default=0,
        help="history summary: tokens the --summary-events are pooled into, one per equal run of them "
        "(must divide --summary-events)",
    )
    g.add_argument("--mixed-epochs", type=int, default=1, help="mixed: epochs of `last` before switching to sliding")
    g.add_argument("--per-seq", type=int, default=1, help="random: windows drawn per user per epoch")
    g.add_argument("--min-len", type=int, default=2, help="shortest window in events (one input and one target)")
    g.add_argument(
        "--targets",
        choices=TARGETS,
        default="all",
        help="all: every position of a window is a target; fresh: only targets no later window of the same user covers",
    )
    g.add_argument(
        "--group-by-length",
        action="store_true",
        help="batch windows of similar length together (sorted within pools of 64 batches, batches shuffled); "
        "each batch is cut to its longest window, so less compute goes to padding when many windows are "
        "shorter than --window (small strides, short histories). Changes which windows share a batch; "
        "each step's loss is then its targets' sum over the epoch's mean targets per step, so "
        "every target still weighs the same",
    )


def _loss_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--loss",
        choices=LOSSES,
        default="ce",
        help="ce: full softmax; sampled: sampled softmax with log-Q; "
        "chunked: exact full softmax without B x T x N logits",
    )
    g.add_argument("--negatives", type=int, default=256, help="sampled: negatives per batch (shared)")
    g.add_argument("--sampler", choices=SAMPLERS, default="uniform", help="sampled: negative distribution")
    g.add_argument("--loss-chunk", type=int, default=8192, help="chunked: items per chunk")


def _optimization_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--batch-size", type=int, default=128, help="windows per step (per process under torchrun)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant", help="LR after warmup")
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="linear LR warmup steps; None = 10%% of the first epoch's steps, at most 100",
    )
    g.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (0 = off)")


def _run_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--epochs", type=int, default=20, help="passes over the windows")
    g.add_argument(
        "--max-train-seconds", type=float, default=None, help="stop (and checkpoint) after this much training time"
    )
    g.add_argument(
        "--max-steps", type=int, default=None, help="stop (and checkpoint) after this many optimizer steps in total"
    )
    g.add_argument(
        "--patience",
        type=int,
        default=5,
        help="stop after this many epochs without a better validation NDCG@10 (0 = never)",
    )
    g.add_argument("--eval-batch-size", type=int, default=256, help="users per validation batch")
    g.add_argument(
        "--valid-sample",
        type=int,
        default=None,
        help="validate on a fixed seeded sample of this many users (each ranked on the full catalogue); "
        "for 10^7-item catalogues on a CPU; None = every validation user",
    )
    g.add_argument(
        "--filter-seen",
        choices=FILTER_SEEN_CHOICES,
        default="auto",
        help="validation drops the user's already-seen items from the competitors (as eval.py --filter-seen); "
        "auto = yes when no validation or test target repeats a seen item (ml-1m, Amazon: the published "
        "protocol), no where repeats are legitimate targets",
    )
    g.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling, dropout and negatives")
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto = cuda when available")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto = bf16 autocast on CUDA, fp32 on CPU; bf16 on a CPU runs the matrix products in bfloat16 "
        "(fast where the CPU has AVX512-BF16 or AMX); losses are always computed in float32",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--threads", type=int, default=None, help="CPU threads of torch and of the core's kernels; None = all cores"
    )
    g.add_argument(
        "--tensorboard",
        default=None,
        help="also write log.jsonl's per-epoch figures as TensorBoard scalars to this dir (needs the tensorboard "
        "package); None = off",
    )


# Check every setting before any work, so a bad flag costs nothing. The upper bounds are far
# beyond any real use; above them a value is a typo that would overflow or exhaust memory later.
BIG = 2**40
INT_RANGES = {
    "window": (1, 2**20),
    "dim": (1, 2**16),
    "layers": (0, 1024),
    "heads": (1, 1024),
    "ffn": (1, 2**20),
    "stride": (1, BIG),
    "max_history": (1, BIG),
    "mixed_epochs": (0, BIG),
    "per_seq": (1, 2**20),
    "min_len": (2, BIG),
    "summary_events": (0, 2**20),
    "summary_tokens": (0, 1024),
    "kshift_k": (1, 1024),
    "kshift_seed": (0, 2**64 - 1),
    "kshift_head": (0, BIG),
    "code_subspaces": (1, 2**16),
    "code_centroids": (1, 2**16),
    "negatives": (1, 2**24),
    "loss_chunk": (1, 2**30),
    "batch_size": (1, 2**20),
    "warmup_steps": (0, BIG),
    "epochs": (1, 10**6),
    "max_steps": (1, BIG),
    "patience": (0, 10**6),
    "eval_batch_size": (1, 2**20),
    "valid_sample": (1, BIG),
    "seed": (0, 2**32 - 1),
    "threads": (1, 4096),
}


def check_settings(args: argparse.Namespace) -> None:
    """Refuse (exit 2, as a ValueError) any setting out of range, from the command line or from a run
    dir's config.json."""
    for name, (lo, hi) in INT_RANGES.items():
        cli.check_int(f"--{name.replace('_', '-')}", getattr(args, name), lo, hi)
    for name in ("lr", "weight_decay", "clip", "max_train_seconds", "dropout"):
        value = getattr(args, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            cli.fail(f"--{name.replace('_', '-')} must be a finite number at least 0, got {value!r}")
    if args.dropout >= 1:
        cli.fail(f"--dropout must be below 1, got {args.dropout}")
    c = args.kshift_compression
    if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
        cli.fail(f"--emb-compression must be a finite number above 0, got {c!r}")
    if args.dim % args.heads:
        cli.fail(f"--dim ({args.dim}) must be a multiple of --heads ({args.heads})")
    _check_item_emb(args)
    if (args.summary_events == 0) != (args.summary_tokens == 0) or (
        args.summary_tokens and args.summary_events % args.summary_tokens
    ):
        cli.fail(
            f"--summary-events ({args.summary_events}) must be a multiple of --summary-tokens "
            f"({args.summary_tokens}), both set or both 0"
        )
    if args.targets == "fresh" and args.regime in ("random", "session"):
        cli.fail(
            f"--targets fresh applies to --regime last, sliding or mixed: {args.regime} windows "
            + ("have no order" if args.regime == "random" else "already take each target once")
        )


def uses_codes(args: argparse.Namespace) -> bool:
    """Whether the settings' item embedding reads data-driven codes (ModelConfig.uses_codes)."""
    return args.item_emb == "codes" or (args.item_emb == "kshift" and args.kshift_rows == "codes")


def code_subspaces(args: argparse.Namespace) -> int:
    """m, the codes per item: --code-subspaces, else --kshift-k for k-shift and 8 for codes."""
    if args.code_subspaces is not None:
        return args.code_subspaces
    return args.kshift_k if args.item_emb == "kshift" else 8


def settings_warning(args: argparse.Namespace) -> str | None:
    """What a valid but probably unintended combination of settings does (one sentence), or None.

    A stride larger than the window is a warning, not a refusal: a frontier grid crosses strides with
    windows on purpose, and such a cell is a legitimate (cheap) point; but a user who typed it should
    know that events are skipped."""
    if args.regime in ("sliding", "mixed") and args.stride > args.window:
        gap = args.stride - args.window
        return (
            f"--stride {args.stride} is larger than --window {args.window}: the {gap:,} event"
            f"{'s' if gap > 1 else ''} between consecutive windows of a user {'are' if gap > 1 else 'is'} never a "
            "target; use a --stride of at most --window to train on every event"
        )
    return None


def _check_item_emb(args: argparse.Namespace) -> None:
    """Refuse the k-shift options without k-shift, the code options without codes, and shapes that do
    not compose (a low-rank width of 0, m not dividing d); the head's bound needs the catalogue, so
    train.py checks it once the data is loaded."""
    kshift_only = {
        "--kshift-head": args.kshift_head > 0,
        "--kshift-weights": args.kshift_weights,
        f"--kshift-rows {args.kshift_rows}": args.kshift_rows != "stored",
        "--kshift-optimizer rowwise": args.kshift_optimizer == "rowwise",
    }
    for flag, given in kshift_only.items():
        if given and args.item_emb != "kshift":
            cli.fail(f"{flag} applies to --item-emb kshift only, not --item-emb {args.item_emb}")
    code_only = {
        f"--code-subspaces {args.code_subspaces}": args.code_subspaces is not None,
        f"--code-centroids {args.code_centroids}": args.code_centroids != 256,
    }
    for flag, given in code_only.items():
        if given and not uses_codes(args):
            cli.fail(f"{flag} applies to --item-emb codes or --kshift-rows codes only, not --item-emb {args.item_emb}")
    m = code_subspaces(args)
    if args.item_emb == "codes" and args.dim % m:
        cli.fail(
            f"--code-subspaces ({m}) must divide --dim ({args.dim}): an item's vector concatenates its sub-embeddings"
        )
    if args.item_emb == "kshift" and args.kshift_rows == "codes" and m != args.kshift_k:
        cli.fail(
            f"--kshift-rows codes reads one code per shift: --code-subspaces ({m}) must equal "
            f"--kshift-k ({args.kshift_k})"
        )
    if args.item_emb == "lowrank" and args.kshift_compression > args.dim:
        cli.fail(
            f"--item-emb lowrank needs --emb-compression ({args.kshift_compression:g}) at most --dim "
            f"({args.dim}): its width dim // compression would be 0"
        )
