"""Train a SASRec-style transformer on sliding windows over a longrec data dir.

    python scripts/train.py --stride 64                       # demo data (made on first use)
    python scripts/train.py --data data/ml-1m --regime last --window 200 --epochs 200
    python scripts/train.py --data data/ml-1m --regime sliding --stride 32 --max-history 1000
    python scripts/train.py --data data/ml-1m --regime mixed --mixed-epochs 5 --stride 64
    python scripts/train.py --data data/big --item-emb kshift --kshift-compression 16 --loss sampled
    python scripts/train.py --data data/ml-1m --item-emb codes --code-subspaces 8 --code-centroids 128
    python scripts/prep.py ml-1m.txt.gz | python scripts/train.py --stride 64 | python scripts/eval.py
    python scripts/train.py --resume runs/20261122-101500-sliding-s64-seed0   # continue a stopped run
    python scripts/train.py --config sasrec.toml --epochs 50   # settings from a file (a run's config.json too)
    python scripts/train.py --stride 64 --tensorboard runs/tb/s64   # and TensorBoard scalars per epoch
    python -m torch.distributed.run --nproc_per_node 2 scripts/train.py --stride 64   # data-parallel (torchrun)

Training examples are pointers (seq, start, stop) into the one event array, made per epoch by
the Rust core (`longrec_core.windows`, `sample_windows`, `session_windows`) and materialized batch by batch by
`longrec_core.gather` in a background thread. Every window ends at or before the user's training
end, so no validation or test event is ever an input or a target. Each epoch ends with a
full-catalogue validation (the same code as eval.py); the best weights by validation NDCG@10 are
kept in model.pt. stdout carries one line: the run dir.

Settings are flags, declared with their defaults and meanings in longrec_core/train_flags.py
(frontier.py parses the flags it passes through with the same declaration); `--help` lists them.
What --resume takes from a run dir, and which existing dirs are refused: longrec_core/runs.py; the
run dir's files (config.json, log.jsonl, model.pt, ckpt.pt, summary.json): longrec_core/rundir.py.
"""

from __future__ import annotations

# First, before torch and polars load: Ctrl-C or SIGTERM while they do ends the stage quietly (exit 130).
import longrec_core.startup  # noqa: F401  # isort: skip

import argparse
import math
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from longrec_core import cli, runs
from longrec_core.codes import OVERSAMPLE, item_codes, training_events
from longrec_core.datadir import DataDir, fingerprint, load_data_dir, load_shards, shard_count
from longrec_core.examples import EpochWindows, epoch_windows, iter_batches, n_batches, regime_of, shuffled_order
from longrec_core.losses import chunked_cross_entropy, full_cross_entropy, sampled_softmax
from longrec_core.metrics import evaluate, metrics_from_ranks, resolve_filter_seen
from longrec_core.model import SASRec, embedding_memory_bytes, saved_codes
from longrec_core.optim import WeightAverage, optimizer_for
from longrec_core.rundir import Checkpoint, RunConfig
from longrec_core.schedule import default_warmup_steps, lr_factor
from longrec_core.tracking import TensorBoard
from longrec_core.train_config import parse_with_config
from longrec_core.train_flags import add_train_flags, check_settings, model_config, settings_warning

DEMO_DATA = Path("data/demo")
# the parts of embedding_memory_bytes that train.py logs, each in MiB
MEMORY_PARTS = (
    "table_bytes",
    "head_bytes",
    "weights_bytes",
    "proj_bytes",
    "rows_bytes",
    "weight_rows_bytes",
    "codes_bytes",
)
cli.report_uncaught_errors()

# ----------------------------------------------------------------------------- settings
p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
add_train_flags(p)  # every flag, its default and meaning: longrec_core/train_flags.py, or --help
args = parse_with_config(p, sys.argv[1:])  # --config FILE first, then the command line
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
main_process = rank == 0


def log(msg: str) -> None:
    if main_process:
        cli.console.print(msg, highlight=False, soft_wrap=True)  # greppable lines, never wrapped


# Ranges and combinations, before any work: a bad flag costs nothing. A resumed run's flags are
# checked once its saved settings are in (runs.resume; the policy of what --resume takes from the
# checkpoint and which existing dirs are refused is in longrec_core/runs.py).
resumed = runs.resume(args, sys.argv[1:], log) if args.resume else None
if resumed is None:
    check_settings(args)
tracker = TensorBoard(args.tensorboard) if args.tensorboard and main_process else None  # before any work
if settings_warning(args):
    log(f"warning: {settings_warning(args)}")

# ----------------------------------------------------------------------------- distributed setup
device = cli.torch_device(args.device)
if world > 1 and args.kshift_optimizer == "rowwise":
    cli.fail("--emb-optimizer rowwise trains in one process; run it without torchrun")
if world > 1:
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
if args.threads:
    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when the core first runs in parallel
bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
if bf16 and device.type == "cpu" and main_process:
    try:  # a private torch call: when it is gone, say nothing rather than fail
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native_bf16 = True
    if not native_bf16:
        cli.console.print(
            "warning: this CPU has no native bfloat16 matrix products; --precision bf16 will be slower than fp32"
        )
cli.keep_freed_memory()  # on CPU, reusing freed activations instead of page-faulting them in saves ~40% a step


# ----------------------------------------------------------------------------- resume or start
if resumed is not None:
    start = resumed
else:
    start = runs.start(
        args, DEMO_DATA, main_process=main_process, log=log, barrier=dist.barrier if world > 1 else lambda: None
    )
run, data_path, ckpt = start.run, start.data_path, start.ckpt

# A sharded data dir under torchrun: each rank reads only its shards (rank, rank + world, ...) and
# draws its batches from them; the ranks agree on the steps per epoch (the fewest any rank has).
n_shards = shard_count(data_path)
per_rank_data = n_shards > 0 and world > 1
if per_rank_data and n_shards % world:
    cli.fail(
        f"{data_path} has {n_shards} shards, not a multiple of the {world} processes; prep it with "
        f"--shards {world * max(1, n_shards // world)}"
    )
# a damaged data dir raises DataDirError (a ValueError): one sentence and exit 2 (report_uncaught_errors)
data: DataDir = load_shards(data_path, range(rank, n_shards, world)) if per_rank_data else load_data_dir(data_path)
args.data = str(Path(data.path).resolve())
if args.loss == "sampled" and args.negatives > data.n_items:
    cli.fail(
        f"--negatives ({args.negatives:,}) must be at most the {data.n_items:,} items of {data_path}; "
        f"for a catalogue this small --loss ce is exact and cheap"
    )
if main_process and len(data.eval_targets("valid")[0]) == 0:
    cli.fail(
        f"{data_path} has no validation targets, and training keeps the weights of the best validation "
        f"epoch; prep it with a validation split"
    )
model_cfg = model_config(args, data.n_items, data.n_types)  # checked before any work but for --kshift-head < N
if model_cfg.uses_codes and per_rank_data:
    cli.fail(
        f"--item-emb {args.item_emb} with codes reads every user's training events to assign them, but under "
        f"torchrun each rank reads only its shards of {data_path}: train it in one process"
    )
filter_seen = resolve_filter_seen(args.filter_seen, data)
if ckpt is not None and ckpt.model_config["n_items"] != data.n_items:
    cli.fail(
        f"cannot resume: the checkpoint was trained on {ckpt.model_config['n_items']:,} items but "
        f"{data_path} now has {data.n_items:,} (was it prepared again?)"
    )
data_fingerprint = fingerprint(data)  # eval.py checks that it ranks on the same data dir
if ckpt is not None and ckpt.data_fingerprint not in (None, data_fingerprint):  # None: older runs
    cli.fail(f"cannot resume: {data_path} is not the data dir this run was trained on (was it prepared again?)")

# ----------------------------------------------------------------------------- model and optimizer
seed = args.seed
random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)
# Item codes: assigned once from the training events (never a validation or test target) before the
# model exists; they are a buffer of the model, so a resumed run takes them from its checkpoint.
codes = None
if model_cfg.uses_codes and ckpt is None:
    tc = time.perf_counter()
    assigned = item_codes(
        training_events(data),
        data.n_items,
        subspaces=model_cfg.code_subspaces,
        centroids=model_cfg.code_centroids,
        seed=model_cfg.kshift_seed,
        assignment=args.code_assignment or "quantile",
        components=args.code_components,
        oversample=OVERSAMPLE if args.code_oversample is None else args.code_oversample,
    )
    codes = assigned.codes
    log(
        f"codes ({args.code_assignment or 'quantile'}): {model_cfg.code_subspaces} sub-spaces x "
        f"{model_cfg.code_centroids:,} centroids assigned from the "
        f"training events in {time.perf_counter() - tc:.2f} s; {assigned.unseen_share:.2%} of items have no "
        f"training event and got hashed codes; singular values "
        + " ".join(f"{v:,.1f}" for v in assigned.singular_values)
    )
elif model_cfg.uses_codes:  # resumed: the checkpoint's codes, never recomputed
    codes = saved_codes(ckpt.model)
    log("codes: restored from the checkpoint")
model = SASRec(model_cfg, codes=codes).to(device)
raw_model = model
optimizer = optimizer_for(raw_model, lr=args.lr, weight_decay=args.weight_decay)
# --ema-decay: validation, model.pt and eval.py take the weights' moving average (its own copy)
average = WeightAverage(raw_model, args.ema_decay) if args.ema_decay > 0 else None
kept_model = average.model if average is not None else raw_model  # the weights validated and saved
if world > 1:
    model = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
if args.compile:
    model = torch.compile(model)

n_params = sum(p.numel() for p in raw_model.parameters())
mem = embedding_memory_bytes(model_cfg)
log(
    f"data {data.path}: {data.n_users:,} users, {data.n_items:,} items, {data.n_events:,} events"
    + (f" (rank 0's shards of {n_shards}; each rank reads its own)" if per_rank_data else "")
)
log(
    f"model: {n_params:,} parameters; item embedding {mem['params_bytes'] / 2**20:,.1f} MiB "
    f"(+{mem['adam_bytes'] / 2**20:,.1f} MiB optimizer state; "
    f"a full table would be {mem['full_table_bytes'] / 2**20:,.1f} MiB)"
)
log(
    f"item embedding memory: {mem['bytes_per_item']:,.1f} bytes per item to train "
    f"({mem['total_bytes'] / 2**20:,.1f} MiB; a full table {mem['full_total_bytes'] / 2**20:,.1f} MiB): "
    + ", ".join(f"{k.removesuffix('_bytes')} {v / 2**20:,.2f} MiB" for k, v in mem.items() if k in MEMORY_PARTS and v)
)
if model_cfg.item_emb == "kshift":
    emb = raw_model.item_emb
    log(
        f"k-shift: k={model_cfg.kshift_k}, {emb.n_rows:,} rows, scheme {model_cfg.kshift_scheme}, "
        f"head {model_cfg.kshift_head:,}, {'learned' if model_cfg.kshift_weights else '1/sqrt(k)'} weights, "
        f"rows {model_cfg.kshift_rows}; "
        + (
            f"{emb.collision_share():.2%} of {'hashed ' * (model_cfg.kshift_rows == 'stored')}items beyond the "
            f"head share their whole row set with another item"
            if model_cfg.kshift_rows != "computed"
            else "collision share not measured (it needs the whole row table)"
        )
    )
elif model_cfg.item_emb == "lowrank":
    log(f"low-rank: width {raw_model.item_emb.table.shape[1]} projected to {model_cfg.dim}")
elif model_cfg.item_emb == "codes":
    log(
        f"codes: {model_cfg.code_subspaces} sub-tables of {model_cfg.code_centroids:,} x "
        f"{model_cfg.dim // model_cfg.code_subspaces}; "
        + f"{raw_model.item_emb.collision_share():.2%} of items share their whole code with another item"
    )
item_counts = (
    torch.from_numpy(data.training_item_counts())  # (N+1,) training events only: no target leaks
    if args.loss == "sampled" and args.sampler == "popularity"
    else None
)


# ----------------------------------------------------------------------------- windows per epoch
def windows_of(epoch: int) -> EpochWindows:
    return epoch_windows(
        data.offsets,
        data.train_end,
        regime=regime_of(args.regime, epoch, args.mixed_epochs),
        window=args.window,
        stride=args.stride,
        min_len=args.min_len,
        max_history=args.max_history,
        per_seq=args.per_seq,
        seed=seed * 1_000_003 + epoch,
        sessions=data.sessions,
    )


# Every epoch of one regime has the same number of windows (random draws a fixed number per user).
epoch_regimes = [regime_of(args.regime, e, args.mixed_epochs) for e in range(args.epochs)]


def steps_per_epoch(n_windows: int) -> int:
    if not per_rank_data:
        return n_batches(n_windows, args.batch_size, world)
    steps = torch.tensor([math.ceil(n_windows / args.batch_size)], device=device)
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    return int(steps.item())


sizes = {r: steps_per_epoch(len(windows_of(epoch_regimes.index(r)))) for r in sorted(set(epoch_regimes))}
total_steps = sum(sizes[r] for r in epoch_regimes)
if total_steps == 0:
    cli.fail(f"no training windows: no user of {data.path} has {args.min_len} events before its training end")


warmup = args.warmup_steps if args.warmup_steps is not None else default_warmup_steps(sizes[epoch_regimes[0]])
log(
    f"schedule: {warmup} warm-up steps, then {args.schedule}; {total_steps:,} steps in {args.epochs} epochs; "
    + (f"validated and kept: the weights' moving average, decay {args.ema_decay:g}; " if average else "")
    + f"validation ranks {'without' if filter_seen else 'with'} the user's seen items "
    f"(--filter-seen {args.filter_seen})"
)
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda step: lr_factor(step, warmup=warmup, total=total_steps, schedule=args.schedule)
)


def loss_fn(
    hidden: torch.Tensor, targets: torch.Tensor, generator: torch.Generator, targets_per_step: float | None = None
) -> tuple[torch.Tensor, float]:
    """(loss to backpropagate, mean loss over the global batch for logging).

    The step's gradient is that of the mean over its targets; with `targets_per_step` (the epoch's
    mean number of targets per optimizer step, under --group-by-length) it is their sum divided by
    that constant instead, so every target weighs the same whichever windows share its batch.
    """
    keep = targets != 0  # padding (and covered targets) never count
    h, t = hidden[keep], targets[keep]  # (M, d), (M,)
    if args.loss == "ce":
        loss = full_cross_entropy(h, raw_model.item_table(), t)
    elif args.loss == "chunked":
        loss = chunked_cross_entropy(h, raw_model.item_table(), t, chunk_size=args.loss_chunk)
    else:
        loss = sampled_softmax(
            h,
            raw_model.item_vectors,
            t,
            args.negatives,
            sampler=args.sampler,
            item_counts=item_counts,
            generator=generator,
            n_items=data.n_items,
        )
    if world == 1:
        return (loss if targets_per_step is None else loss * (len(t) / targets_per_step)), loss.item()
    # DDP averages gradients over ranks; weighting each rank's mean by its share of the global
    # targets makes the step the gradient of the global mean, as one process would take it.
    stats = torch.tensor([float(len(t)), loss.item() * len(t)], dtype=torch.float64, device=h.device)
    dist.all_reduce(stats)
    per_step = stats[0].item() if targets_per_step is None else targets_per_step
    return loss * (len(t) * world / per_step), (stats[1] / stats[0]).item()


# ----------------------------------------------------------------------------- state
state = {
    "epoch": 0,
    "batch": 0,
    "step": 0,
    "best_ndcg": -1.0,
    "best_epoch": -1,
    "bad_epochs": 0,
    "train_seconds": 0.0,
    "tokens": 0,
    "examples": 0,
    "loader_wait_seconds": 0.0,
    "log_lines": 0,  # records in log.jsonl: a resumed run cuts it back to these (RunDir.truncate_log)
    "ep": {},
}
neg_gen = torch.Generator().manual_seed(seed * 7919 + rank)
if ckpt is not None:
    raw_model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.optimizer)
    scheduler.load_state_dict(ckpt.scheduler)
    state.update(ckpt.state)
    torch.set_rng_state(ckpt.rng["torch"])
    np.random.set_state(ckpt.rng["numpy"])
    random.setstate(ckpt.rng["python"])
    neg_gen.set_state(ckpt.rng["negatives"])
    if average is not None:
        if ckpt.averaged is None:
            cli.fail(f"cannot resume: {run.checkpoint_path} holds no weight average, yet --ema-decay is set")
        average.load_state_dict(ckpt.averaged)
    if device.type == "cuda" and ckpt.rng.get("cuda") is not None:
        torch.cuda.set_rng_state(ckpt.rng["cuda"])
    log(f"resuming {run.path} in epoch {state['epoch'] + 1} after its batch {state['batch']} (step {state['step']})")

if main_process:
    state["log_lines"] = run.prepare(ckpt_state=None if ckpt is None else ckpt.state)
    run.write_config(
        RunConfig(
            vars(args),
            model=model_cfg.to_dict(),
            world_size=world,
            threads_used=torch.get_num_threads(),
            data_fingerprint=data_fingerprint,
        )
    )


def save_checkpoint() -> None:
    if not main_process:
        return
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "negatives": neg_gen.get_state(),
        "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
    }
    run.save_checkpoint(
        Checkpoint(
            model=raw_model.state_dict(),
            model_config=model_cfg.to_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng,
            state=dict(state),
            config=vars(args),
            threads=torch.get_num_threads(),  # its rounding depends on it: --resume restores it
            data_fingerprint=data_fingerprint,
            averaged=average.state_dict() if average is not None else None,
        )
    )


def peak_memory_bytes() -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- training loop
autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
stop_reason = "epochs"
progress = cli.progress(eta=True, enabled=main_process)
# Ctrl-C or SIGTERM (a scheduler's preemption) stops after the current step with a checkpoint.
# Not under torchrun: the processes would stop at different steps and wait on each other.
stop_requested = cli.stop_requests() if world == 1 else (lambda: None)
with progress:
    bar = progress.add_task("training", total=total_steps, completed=min(state["step"], total_steps))
    while state["epoch"] < args.epochs:
        epoch = state["epoch"]
        if state["batch"] == 0:  # a fresh epoch (a resumed one keeps its running sums)
            state["ep"] = {"loss_sum": 0.0, "steps": 0, "tokens": 0, "examples": 0, "seconds": 0.0, "wait": 0.0}
        ep = state["ep"]
        model.train()
        w = windows_of(epoch)
        window_lengths = w.stop - w.start if args.group_by_length else None
        # Grouped batches differ in size (a batch of short windows has few targets): weigh each
        # target the same, as in randomly composed batches, not each batch.
        targets_per_step = (
            float(w.n_targets(args.targets == "fresh").mean()) * args.batch_size * world
            if args.group_by_length
            else None
        )
        if per_rank_data:  # this rank's own windows, cut to the steps every rank has
            steps = sizes[regime_of(args.regime, epoch, args.mixed_epochs)]
            order = shuffled_order(len(w), seed * 1_000_003 + rank, epoch, args.batch_size, lengths=window_lengths)[
                : steps * args.batch_size
            ]
        else:
            order = shuffled_order(len(w), seed, epoch, args.batch_size, rank, world, lengths=window_lengths)
        stopped_early = False
        t0 = tw = time.perf_counter()
        for inputs, targets, types_in, prefix in iter_batches(
            data.items,
            data.types,
            w,
            order,
            batch_size=args.batch_size,
            window=args.window,
            fresh_only=args.targets == "fresh",
            skip=state["batch"],
            offsets=data.offsets,
            summary_events=args.summary_events,
        ):
            ep["wait"] += time.perf_counter() - tw
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            types_in = types_in.to(device) if types_in is not None else None
            prefix = prefix.to(device, non_blocking=True) if prefix is not None else None
            with autocast:
                hidden = model(inputs, types_in, prefix)  # (B, T, d)
                loss, loss_value = loss_fn(hidden, targets, neg_gen, targets_per_step)
            if not math.isfinite(loss_value):
                last_good = (
                    f"the last good checkpoint is {run.checkpoint_path}"
                    if run.has_checkpoint()
                    else "there is no checkpoint yet; try a lower --lr"
                )
                cli.console.print(
                    f"loss became {loss_value} in epoch {epoch + 1}, step {state['step']}; stopping: {last_good}"
                )
                raise SystemExit(1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(raw_model)
            state["step"] += 1
            state["batch"] += 1
            ep["tokens"] += int((inputs != 0).sum())  # non-padding input positions
            ep["examples"] += len(inputs)
            ep["loss_sum"] += loss_value
            ep["steps"] += 1
            now = time.perf_counter()
            progress.update(
                bar,
                advance=1,
                description=f"epoch {epoch + 1}/{args.epochs} loss {ep['loss_sum'] / ep['steps']:.4f} "
                f"{ep['tokens'] / max(1e-9, ep['seconds'] + now - t0) / 1e3:,.1f}k tok/s",
            )
            if (
                (args.max_train_seconds is not None and state["train_seconds"] + now - t0 >= args.max_train_seconds)
                or (args.max_steps is not None and state["step"] >= args.max_steps)
                or stop_requested()
            ):
                stopped_early = True
                break
            tw = time.perf_counter()
        seconds = time.perf_counter() - t0
        ep["seconds"] += seconds
        state["train_seconds"] += seconds
        if stopped_early:
            stop_reason = (
                "interrupted"
                if stop_requested()
                else "max_steps"
                if args.max_steps is not None and state["step"] >= args.max_steps
                else "max_train_seconds"
            )
        else:
            if world > 1:  # count what every rank processed
                counts = torch.tensor([ep["tokens"], ep["examples"]], dtype=torch.int64)
                dist.all_reduce(counts)
                ep["tokens"], ep["examples"] = (int(c) for c in counts)
            state["tokens"] += ep["tokens"]
            state["examples"] += ep["examples"]
            state["loader_wait_seconds"] += ep["wait"]

        # Validation on rank 0 (full catalogue, the same code as eval.py; with per-rank shards, over
        # rank 0's users only); others wait.
        record = None
        if main_process and stop_reason != "interrupted":  # an interrupted run stops at once
            tv = time.perf_counter()
            _, ranks = evaluate(
                kept_model,
                data,
                "valid",
                batch_size=args.eval_batch_size,
                device=device,
                filter_seen=filter_seen,
                sample=args.valid_sample,
            )
            valid = metrics_from_ranks(ranks) if len(ranks) else {}
            ndcg = valid.get("NDCG@10", float("nan"))
            improved = ndcg > state["best_ndcg"]
            if improved:
                state["best_ndcg"], state["best_epoch"], state["bad_epochs"] = ndcg, epoch, 0
                run.save_model(kept_model.state_dict(), model_cfg.to_dict())
            else:
                state["bad_epochs"] += 1
            record = {
                "epoch": epoch + 1,  # counted from 1, as on screen and in summary.json
                "partial": stopped_early,
                "loss": ep["loss_sum"] / max(1, ep["steps"]),
                "train_seconds": ep["seconds"],
                "eval_seconds": time.perf_counter() - tv,
                "tokens": ep["tokens"],
                "examples": ep["examples"],
                "tokens_per_second": ep["tokens"] / ep["seconds"],
                "loader_wait_share": ep["wait"] / ep["seconds"],
                "peak_memory_bytes": peak_memory_bytes(),
                "lr": scheduler.get_last_lr()[0],
                "filter_seen": filter_seen,
                "valid": valid,
            }
            run.append_log(record)
            if tracker is not None:
                tracker.log(record)
            state["log_lines"] += 1
            log(
                f"epoch {epoch + 1}: loss {record['loss']:.4f}, valid NDCG@10 {ndcg:.4f} "
                f"HR@10 {valid.get('HR@10', float('nan')):.4f}{' (best)' if improved else ''}, "
                f"{record['tokens_per_second'] / 1e3:,.1f}k tok/s, {ep['seconds']:.1f} s, "
                f"loader wait {record['loader_wait_share']:.1%}"
            )
        if stopped_early:  # validated what the budget allowed; the epoch itself resumes later
            save_checkpoint()
            log(
                f"stopped in epoch {epoch + 1} after batch {state['batch']} ({stop_reason}); "
                f"continue with --resume {run.path}"
            )
            break
        state["epoch"] += 1
        state["batch"] = 0
        save_checkpoint()
        if world > 1:
            flag = torch.tensor([state["bad_epochs"]], device=device if device.type == "cuda" else "cpu")
            dist.broadcast(flag, 0)
            state["bad_epochs"] = int(flag.item())
        if args.patience and state["bad_epochs"] >= args.patience:
            stop_reason = "early_stopping"
            log(
                f"no better validation NDCG@10 for {args.patience} epochs: "
                f"stopping (best epoch {state['best_epoch'] + 1})"
            )
            break

# ----------------------------------------------------------------------------- summary
if main_process:
    # A run stopped inside an epoch has counted that epoch's work only in its running sums.
    partial = state["ep"] if state["batch"] > 0 else {"tokens": 0, "examples": 0, "wait": 0.0}
    tokens, examples = state["tokens"] + partial["tokens"], state["examples"] + partial["examples"]
    loader_wait = state["loader_wait_seconds"] + partial["wait"]
    summary = {
        "run_dir": str(run.path),
        "data": args.data,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "precision": "bf16" if bf16 else "fp32",
        "world_size": world,
        "regime": args.regime,
        "stride": args.stride,
        "window": args.window,
        "stop_reason": stop_reason,
        "epochs": state["epoch"],
        "steps": state["step"],
        "train_seconds": state["train_seconds"],
        "tokens": tokens,
        "examples": examples,
        "tokens_per_second": tokens / max(1e-9, state["train_seconds"]),
        "loader_wait_share": loader_wait / max(1e-9, state["train_seconds"]),
        "peak_memory_bytes": peak_memory_bytes(),
        "parameters": n_params,
        "embedding_memory": mem,
        "best_epoch": state["best_epoch"] + 1,  # 0: none validated
        "first_epoch": 1,  # epochs here and in log.jsonl count from 1 (runs without this key: from 0)
        "best_valid_ndcg10": state["best_ndcg"],
        "filter_seen": filter_seen,
        "warmup_steps": warmup,
        "threads": torch.get_num_threads(),
        "data_fingerprint": data_fingerprint,
    }
    run.write_summary(summary)
if tracker is not None:
    tracker.close()
exit_status = 130 if main_process and stop_reason == "interrupted" else 0  # unfinished: nothing to pipe on
if main_process and exit_status == 0:
    cli.print_path(run.path)
if world > 1:
    # Ranks leave together, with DDP's reducer (it holds the process group and the last step's
    # gradient work) freed first, and skip the interpreter's teardown: gloo threads still alive
    # there can abort a finished run ("terminate called without an active exception").
    del model
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status)
raise SystemExit(exit_status)
