"""train.py's flags, declared once: train.py builds its parser with `add_train_flags`, and
frontier.py parses the flags it passes through to every run with the same declaration, so a
misspelt flag or a bad choice stops a grid before any run. No torch: frontier.py stays quick.

    p = cli.ArgumentParser(); add_train_flags(p); args = p.parse_args(); check_settings(args)
"""

from __future__ import annotations

import argparse
import math
import re
from typing import TYPE_CHECKING, Any

from longrec_core import cli
from longrec_core.choices import (
    CODE_ASSIGNMENTS,
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
    SUMMARY_POOLS,
    TARGETS,
)

if TYPE_CHECKING:
    from longrec_core.model import ModelConfig

GROUPS = (
    "input and output",
    "model",
    "item embedding",
    "windows",
    "loss",
    "optimization",
    "run",
)  # --help headings, in order


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Declare every train.py flag on `p` (name, type, default, choices, help), grouped by heading."""
    adders = (_io_flags, _model_flags, _item_emb_flags, _windows_flags, _loss_flags, _optimization_flags, _run_flags)
    for title, add in zip(GROUPS, adders, strict=True):
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


def _item_emb_flags(g: argparse._ArgumentGroup) -> None:
    """The item embedding: the full table, k-shift, low-rank or item codes, and their settings."""
    g.add_argument(
        "--item-emb",
        choices=ITEM_EMBS,
        default="full",
        help="full N x d table, the k-shift shared table, lowrank: an N x r table (r = dim // "
        "--emb-compression) times a learned r x d projection, k-shift's memory with a row per item, or "
        "codes (RecJPQ): each item has --code-subspaces codes assigned from the training events before "
        "training (an SVD of the user x item matrix, longrec_core/codes.py) and its vector concatenates the "
        "d/m-wide row each code picks in its sub-table of --code-centroids rows",
    )
    g.add_argument(
        "--emb-compression",
        "--kshift-compression",
        dest="kshift_compression",
        type=float,
        metavar="C",
        default=16,
        help="item embedding memory over the full table's: k-shift table rows P = ceil(N / compression) "
        "(below 1: more rows than items, e.g. 0.87 for the paper code's P = 1.15 N); lowrank: width "
        "r = dim // compression",
    )
    _code_flags(g)
    _kshift_flags(g)


def _code_flags(g: argparse._ArgumentGroup) -> None:
    """The data-driven item codes' settings (--item-emb codes, --kshift-rows codes)."""
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
    g.add_argument(
        "--code-residual",
        type=int,
        default=0,
        help="codes: r learned floats of each item's own, projected to d and added to its concatenated "
        "sub-embeddings (16r bytes per item to train with AdamW); 0 = codes alone",
    )
    g.add_argument(
        "--code-assignment",
        choices=CODE_ASSIGNMENTS,
        default=None,
        help="codes: how SVD coordinates become codes; quantile = RecJPQ's (one component per code, cut into "
        "equal buckets), pq = product quantisation of --code-components components (k-means in each "
        "sub-space; longrec_core/codes.py); None = quantile",
    )
    g.add_argument(
        "--code-components",
        type=int,
        default=None,
        help="codes with --code-assignment pq: SVD components quantised (at least --code-subspaces; None = 8 per code)",
    )
    g.add_argument(
        "--code-oversample",
        type=int,
        default=None,
        help="codes: extra columns of the randomized SVD that assigns them (None = 8); its memory is "
        "2 x (N+1) x (m + oversample) floats, so pass 0 for catalogues of 10^8 items",
    )


def _kshift_flags(g: argparse._ArgumentGroup) -> None:
    """The k-shift embedding's settings (also the seed of the item codes)."""
    g.add_argument("--kshift-k", type=int, default=8, help="k-shift: rows summed per item")
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
        "takes row c * C + code[item, c] of a table of k * C rows (C = --code-centroids; --emb-compression "
        "is not used), the codes assigned from the training events as for --item-emb codes (k bytes per item)",
    )
    g.add_argument(
        "--emb-optimizer",
        "--kshift-optimizer",
        dest="kshift_optimizer",
        choices=KSHIFT_OPTIMIZERS,
        default="adamw",
        help="the per-item table's optimizer: k-shift's shared table, or --item-emb codes' --code-residual "
        "table. adamw = two moments (8 bytes per value); rowwise = one second moment and step count per row "
        "(8 bytes a row), no momentum, and for k-shift a sparse gradient: for catalogues whose AdamW state "
        "would not fit, or more residual floats in the same bytes (longrec_core.optim)",
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
        "input, in training and in prediction, pooled into --summary-tokens extra inputs (0 = off)",
    )
    g.add_argument(
        "--summary-tokens",
        type=int,
        default=0,
        help="history summary: tokens the --summary-events are pooled into (must divide --summary-events)",
    )
    g.add_argument(
        "--summary-pool",
        choices=SUMMARY_POOLS,
        default="mean",
        help="history summary: mean = token i is the mean item vector of the i-th equal run of the events; "
        "attention = token i is what a learned query picks from all of them (default: mean)",
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
    g.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        metavar="D",
        help="validate, keep and evaluate an exponential moving average of the weights, each step "
        "avg = d avg + (1 - d) weights with d = min(D, (1 + step) / (10 + step)) (longrec_core.optim."
        "WeightAverage); 0 = off, the trained weights themselves",
    )


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


# Check every setting before any work, so a bad flag costs nothing. The model's settings are
# ModelConfig's to check (model_config); the others are here. The upper bounds are far beyond any real
# use; above them a value is a typo that would overflow or exhaust memory later.
BIG = 2**40
INT_RANGES = {
    "stride": (1, BIG),
    "max_history": (1, BIG),
    "mixed_epochs": (0, BIG),
    "per_seq": (1, 2**20),
    "min_len": (2, BIG),
    "negatives": (1, 2**24),
    "code_oversample": (0, 2**16),
    "code_components": (1, 2**16),
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
# ModelConfig's fields that a flag of the same dest sets; max_len is --window, code_subspaces is derived
# (model_config), n_items and n_types come from the data dir.
MODEL_FLAGS = (
    "dim",
    "layers",
    "heads",
    "ffn",
    "dropout",
    "item_emb",
    "kshift_k",
    "kshift_compression",
    "kshift_scheme",
    "kshift_seed",
    "kshift_head",
    "kshift_weights",
    "kshift_rows",
    "kshift_optimizer",
    "summary_tokens",
    "summary_events",
    "summary_pool",
    "code_centroids",
    "code_residual",
)
# the flags of the code assignment, refused without codes (m is also the model's code_subspaces)
CODE_FLAGS = ("code_subspaces", "code_assignment", "code_components", "code_oversample")
# the flag that sets each field, as ModelConfig's refusals name it
FLAG_OF = {
    **{f: "--" + f.replace("_", "-") for f in (*MODEL_FLAGS, *CODE_FLAGS)},
    "max_len": "--window",
    "kshift_compression": "--emb-compression",
    "kshift_optimizer": "--emb-optimizer",
}
UNKNOWN_ITEMS = 2**63 - 1  # n_items before the data is loaded: above any --kshift-head, whose bound waits for the data


def check_settings(args: argparse.Namespace) -> None:
    """Refuse (exit 2, as a ValueError) any setting out of range or any combination that does not
    compose, from the command line or from a run dir's config.json. The model's bound on the
    catalogue (--kshift-head below the items) waits for the data: train.py's model_config then."""
    for name, (lo, hi) in INT_RANGES.items():
        cli.check_int(f"--{name.replace('_', '-')}", getattr(args, name), lo, hi)
    for name in ("lr", "weight_decay", "clip", "max_train_seconds"):
        value = getattr(args, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            cli.fail(f"--{name.replace('_', '-')} must be a finite number at least 0, got {value!r}")
    if not (isinstance(args.ema_decay, (int, float)) and 0 <= args.ema_decay < 1):  # NaN fails too
        cli.fail(f"--ema-decay must be a number in [0, 1), got {args.ema_decay!r}")
    model_config(args)
    if args.targets == "fresh" and args.regime in ("random", "session"):
        cli.fail(
            f"--targets fresh applies to --regime last, sliding or mixed: {args.regime} windows "
            + ("have no order" if args.regime == "random" else "already take each target once")
        )


def model_config(args: argparse.Namespace, n_items: int = UNKNOWN_ITEMS, n_types: int = 0) -> ModelConfig:
    """The ModelConfig of the flags in `args` for a catalogue of `n_items` items (unknown: no bound on
    --kshift-head yet) and `n_types` event types. ModelConfig checks every model setting; its refusal
    is raised again (ValueError, exit 2) naming the flags as typed (`kshift_head` -> `--kshift-head`).

    --code-subspaces None means m = --kshift-k for --kshift-rows codes, else 8. A --code-subspaces or
    --code-oversample given without codes is refused here: ModelConfig cannot tell 8 given from its
    default (and the oversample is the assignment's, not the model's)."""
    from longrec_core.model import ModelConfig  # here: frontier.py reads these flags without torch

    codes = args.item_emb == "codes" or (args.item_emb == "kshift" and args.kshift_rows == "codes")
    for flag in CODE_FLAGS:
        if getattr(args, flag) is not None and not codes:
            raise ValueError(
                f"{FLAG_OF[flag]} {getattr(args, flag)} applies to --item-emb codes or --kshift-rows codes only, "
                f"not --item-emb {args.item_emb}"
            )
    if args.code_components is not None and args.code_assignment != "pq":
        raise ValueError(f"--code-components {args.code_components} applies to --code-assignment pq only")
    m = args.code_subspaces if args.code_subspaces is not None else (args.kshift_k if args.item_emb == "kshift" else 8)
    if codes and args.code_components is not None and args.code_components < m:
        raise ValueError(f"--code-components ({args.code_components}) must be at least the {m} codes per item")
    try:
        return ModelConfig(
            n_items=n_items,
            max_len=args.window,
            n_types=n_types,
            code_subspaces=m if codes else 8,
            **{f: getattr(args, f) for f in MODEL_FLAGS},
        )
    except ValueError as e:
        flags = re.compile(r"\b(" + "|".join(FLAG_OF) + r")\b")
        raise ValueError(flags.sub(lambda w: FLAG_OF[w.group(1)], str(e))) from None


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
