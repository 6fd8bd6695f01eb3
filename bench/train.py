"""Training-pipeline benchmark on CPU: window construction, tokens/s, loader share of step time
and peak memory for the paper's configuration, beside the way the paper's code and most peers
feed a model (Python lists of per-example windows, a per-example Dataset, a pad_sequence
collate), and beside a floor with no loader at all, all measured in the same run on the same data.

    python bench/train.py                                   # ml-1m from ../shared/data (else demo), minutes on 2 cores
    python bench/train.py --data data/ml-1m --steps 500     # longer timing, less noise
    python bench/train.py --rounds 3                        # on a shared machine: best of 3 alternating rounds
    python bench/train.py --threads 1 --json bench/out/train-1t.json

Pipelines, each in a fresh subprocess (`bench/train.py --worker NAME ...`):
  longrec  windows = longrec_core.windows(offsets, train_end, ...) -> (seq, start, stop) pointers;
           batches from longrec_core.examples.iter_batches (shuffled; `gather` in a background thread)
  grouped  longrec with train.py's --group-by-length: batches of windows of similar length, each
           cut to its longest window (fewer padded positions; a different batch composition). The
           loss here is each batch's mean: train.py's per-target weighting is one scalar multiply
  bf16     longrec with train.py's --precision bf16: the step under bf16 autocast (matrix products
           and dropout masks in bfloat16, softmaxes and the loss in float32); fast on CPUs with
           AVX512-BF16 or AMX, slow elsewhere
  grouped-bf16  both
  peer     windows = a Python list of per-example item lists, built user by user from the end of
           the history back by stride, as the paper's released code does; a torch Dataset whose
           __getitem__ returns torch.tensor(window); DataLoader(shuffle=True, num_workers=0) with a
           right-aligning pad_sequence collate
  paper    the peer's feeding and a plain PyTorch SASRec step: the same model with torch's own
           GELU and dropout (bernoulli_ masks) and fused attention (SASRec(cfg,
           ops=longrec_core.kernels.TORCH)), logits + F.cross_entropy for
           the loss, and glibc's default allocator: the paper-style pipeline as a whole, which the
           tokens/s target is about
  floor    the same model step on one fixed pre-built batch: the pure compute floor
longrec, peer and floor train the same model as scripts/train.py (longrec_core.model.SASRec with
its default ops, the core's dropout kernels; freed memory kept for reuse), so longrec vs peer isolates the feeding
and longrec vs paper is the whole pipeline. Every pipeline uses the same seed and loss
(full softmax cross-entropy over the catalogue, padding never a target), AdamW and gradient
clipping as scripts/train.py does, for --warmup then --steps timed steps. tokens = non-padding
input positions; loader share = seconds the loop waited for its next batch / timed seconds.

Peak memory is the worker's peak RSS: VmHWM from /proc/self/status on Linux (it belongs to the
new address space, so unlike ru_maxrss it does not inherit the launching process's high-water
mark through vfork + exec; bench/memory.py); resource.getrusage ru_maxrss elsewhere.
Figures and ratios are printed; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memory import cpu_and_cores, peak_rss_bytes, rss_bytes, run_fresh_worker

REPO = Path(__file__).resolve().parents[1]
SHARED_ML1M = REPO.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt.gz"
ML1M_DIR = REPO / "bench" / "out" / "ml-1m"  # git-ignored
DEMO_DIR = REPO / "data" / "demo"  # the same demo data train.py makes on first use

# The paper's released pipeline on a 2-core machine, as reported for it, for scale only: another
# machine, and its own count of ml-1m windows.
PAPER = {"build_s": 11.1, "windows": 547_748, "tokens_per_s": 9_500.0}
TARGETS = {"build": 100.0, "tokens": 3.0}  # longrec vs the peer: build speed-up, tokens/s ratio
PIPELINES = ("longrec", "grouped", "bf16", "grouped-bf16", "peer", "paper", "floor")
BF16 = ("bf16", "grouped-bf16")  # pipelines that train under bf16 autocast, as train.py --precision bf16
GROUPED = ("grouped", "grouped-bf16")  # and with train.py --group-by-length
LABELS = {
    "longrec": "longrec: core windows, gather thread",
    "grouped": "longrec --group-by-length",
    "bf16": "longrec --precision bf16",
    "grouped-bf16": "longrec --group-by-length --precision bf16",
    "peer": "peer: lists, Dataset, pad_sequence",
    "paper": "paper-style: peer + plain PyTorch step",
    "floor": "floor: one fixed batch",
}
CHECK_SAMPLE = 2_000  # peer windows compared with the core's, element by element


# ----------------------------------------------------------------------------- worker (fresh process)


def peer_windows(
    items: Any, offsets: Any, ends: Any, *, window: int, stride: int, max_history: int | None, min_len: int = 2
) -> list[list[int]]:
    """The paper's way: per user, the history as a Python list, then one slice per window end,
    from the last event back to the first by stride. Windows hold at most window + 1 events
    (inputs and the shifted targets), the same examples as longrec_core.windows."""
    examples: list[list[int]] = []
    for u in range(len(ends)):
        a, b = int(offsets[u]), int(ends[u])
        if max_history is not None:
            a = max(a, b - max_history)
        hist = items[a:b].tolist()  # the user's history as a Python list
        for stop in range(len(hist), min_len - 1, -stride):
            examples.append(hist[max(0, stop - window - 1) : stop])
    return examples


def check_same_windows(examples: list[list[int]], items: Any, seq: Any, start: Any, stop: Any) -> bool:
    """The peer's windows are the core's: same count, same total length, and CHECK_SAMPLE random
    windows equal element by element. The core lists a user's windows in time order, the peer
    from the last back, so window j of user u sits at first_u + n_u - 1 - j in the peer's list."""
    import numpy as np

    if len(examples) != len(start):
        return False
    if sum(map(len, examples)) != int((stop - start).sum()):
        return False
    first = np.searchsorted(seq, seq, side="left")  # (W,) first window of each window's user
    last = np.searchsorted(seq, seq, side="right") - 1  # (W,) last window of each window's user
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(start), min(CHECK_SAMPLE, len(start))).tolist():
        peer_i = int(first[i] + last[i] - i)
        if examples[peer_i] != items[start[i] : stop[i]].tolist():
            return False
    return True


def worker(a: argparse.Namespace) -> dict[str, Any]:
    """One pipeline in this fresh process: build its windows (best of --repeats), then train."""
    import torch

    import longrec_core as lc
    from longrec_core.datadir import load_data_dir

    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["RAYON_NUM_THREADS"] = str(a.threads)  # the core's kernels too, as train.py --threads
    if a.worker != "paper":  # as scripts/train.py does; "paper" is a plain PyTorch step
        from longrec_core.cli import keep_freed_memory

        keep_freed_memory()
    data = load_data_dir(a.data)
    items, offsets, ends, wargs = data.items, data.offsets, data.train_end, window_args(a)
    # torch alone holds hundreds of MiB: what each pipeline adds is its peak above this
    out: dict[str, Any] = {
        "pipeline": a.worker,
        "torch_threads": torch.get_num_threads(),
        "rss_after_imports": rss_bytes(),
    }

    def timed(fn: Any) -> tuple[Any, float]:
        """fn's result (last run) and its best wall seconds over --repeats runs."""
        best, res = float("inf"), None
        for _ in range(a.repeats):
            res = None  # free the previous result first: peak memory is one result's
            t0 = time.perf_counter()
            res = fn()
            best = min(best, time.perf_counter() - t0)
        return res, best

    examples = None
    if a.worker not in ("peer", "paper", "floor"):
        (_seq, start, _stop), out["build_s"] = timed(lambda: lc.windows(offsets, ends, **wargs))
        out["windows"] = len(start)
    elif a.worker in ("peer", "paper"):
        examples, out["build_s"] = timed(lambda: peer_windows(items, offsets, ends, **wargs))
        out["windows"] = len(examples)
        out["same_windows_as_core"] = check_same_windows(examples, items, *lc.windows(offsets, ends, **wargs))
    out.update(train(a, data.n_items, batch_source(a, data, examples)))
    return out


def batch_source(a: argparse.Namespace, data: Any, examples: list[list[int]] | None) -> Iterator[tuple[Any, Any]]:
    """The pipeline's endless (inputs, targets) batches, each (B, T) long, right-aligned, 0 = padding:
    the peer's DataLoader over `examples`, one fixed batch (floor), or the core's."""
    if examples is not None:
        return peer_batches(a, examples)
    if a.worker != "floor":
        return core_batches(a, data)
    from longrec_core.examples import epoch_windows, iter_batches, shuffled_order

    w = epoch_windows(data.offsets, data.train_end, regime="sliding", **window_args(a))
    order = shuffled_order(len(w), a.seed, 0, a.batch_size)
    fixed = next(iter_batches(data.items, None, w, order, batch_size=a.batch_size, window=a.window))[:2]
    return iter(lambda: fixed, None)  # the same batch forever


def window_args(a: argparse.Namespace) -> dict[str, Any]:
    return {"window": a.window, "stride": a.stride, "max_history": a.max_history}


def core_batches(a: argparse.Namespace, data: Any) -> Iterator[tuple[Any, Any]]:
    """Shuffled epochs of the core's windows, one after another, as scripts/train.py makes them."""
    from longrec_core.examples import epoch_windows, iter_batches, shuffled_order

    w = epoch_windows(data.offsets, data.train_end, regime="sliding", **window_args(a))
    for epoch in range(1 << 30):  # as many epochs as the steps need
        lengths = w.stop - w.start if a.worker in GROUPED else None
        order = shuffled_order(len(w), a.seed, epoch, a.batch_size, lengths=lengths)
        for inputs, targets, *_ in iter_batches(data.items, None, w, order, batch_size=a.batch_size, window=a.window):
            yield inputs, targets


def peer_batches(a: argparse.Namespace, examples: list[list[int]]) -> Iterator[tuple[Any, Any]]:
    """The peer's feeding, epoch after epoch: a per-example Dataset, DataLoader(shuffle=True,
    num_workers=0) and a right-aligning pad_sequence collate."""
    import torch
    from torch.nn.utils.rnn import pad_sequence
    from torch.utils.data import DataLoader, Dataset

    class WindowDataset(Dataset):
        """One example per window: the window's items as a tensor (variable length)."""

        def __len__(self) -> int:
            return len(examples)

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.tensor(examples[i], dtype=torch.long)

    def pad_collate(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-align (pad on the left): flip, pad_sequence, flip back; then inputs and targets."""
        seqs = pad_sequence([s.flip(0) for s in batch], batch_first=True).flip(1)  # (B, L), L <= window + 1
        inputs, targets = seqs[:, :-1], seqs[:, 1:].clone()
        targets[inputs == 0] = 0  # a window's first event has no input before it: not a target
        return inputs, targets

    loader = DataLoader(
        WindowDataset(),
        batch_size=a.batch_size,
        shuffle=True,
        collate_fn=pad_collate,
        num_workers=0,
        generator=torch.Generator().manual_seed(a.seed),
    )
    while True:
        yield from loader


def train(a: argparse.Namespace, n_items: int, batches: Iterator[tuple[Any, Any]]) -> dict[str, Any]:
    """--warmup then --steps timed steps of the model, as scripts/train.py takes them (loss `ce`,
    AdamW, clipping); the figures of the timed ones."""
    import numpy as np
    import torch

    from longrec_core import kernels
    from longrec_core.losses import full_cross_entropy, naive_cross_entropy
    from longrec_core.model import ModelConfig, SASRec

    torch.manual_seed(a.seed)
    cfg = ModelConfig(
        n_items=n_items, max_len=a.window, dim=a.dim, layers=a.layers, heads=a.heads, ffn=a.ffn, dropout=a.dropout
    )
    # "paper" runs torch's dropout, GELU and fused attention; the others the core's CPU kernels
    model = SASRec(cfg, ops=kernels.TORCH if a.worker == "paper" else kernels.CORE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss_of = naive_cross_entropy if a.worker == "paper" else full_cross_entropy
    wait, tokens, examples_seen = 0.0, 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(a.warmup + a.steps):
        if i == a.warmup:  # the timed part starts here
            wait, tokens, examples_seen = 0.0, 0, 0
            t0, c0 = time.perf_counter(), time.process_time()
        tw = time.perf_counter()
        inputs, targets = next(batches)
        wait += time.perf_counter() - tw
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.worker in BF16):
            hidden = model(inputs)  # (B, T, d)
            keep = targets != 0  # padding never counts
            loss = loss_of(hidden[keep], model.item_table(), targets[keep])
        loss_value = loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += int((inputs != 0).sum())  # non-padding input positions
        examples_seen += len(inputs)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if hasattr(batches, "close"):
        batches.close()  # stops the gather thread
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": a.steps,
        "seconds": seconds,
        "step_ms": 1e3 * seconds / a.steps,
        "tokens": tokens,
        "examples": examples_seen,
        "tokens_per_s": tokens / seconds,
        "loader_s": wait,
        "loader_share": wait / seconds,
        "cpu_over_wall": cpu_seconds / seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "last_loss": loss_value,
        "peak_rss": peak_rss_bytes(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }


# ----------------------------------------------------------------------------- driver


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    say(f"error: {msg}")
    raise SystemExit(2)


def default_data() -> Path:
    """ml-1m from ../shared/data made into bench/out/ml-1m (once); else the demo data."""
    if SHARED_ML1M.is_file():
        target, cmd = ML1M_DIR, [str(SHARED_ML1M), "--format", "pairs", "--out", str(ML1M_DIR)]
    else:
        target, cmd = DEMO_DIR, ["--synthetic", "--out", str(DEMO_DIR)]
    if not (target / "manifest.json").exists():
        say(f"making the data dir {target} with scripts/prep.py")
        p = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "prep.py"), *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if p.returncode != 0:
            fail(f"scripts/prep.py failed: {(p.stderr.strip().splitlines() or ['no message'])[-1]}")
    return target


def worker_flags(a: argparse.Namespace) -> list[str]:
    flags = [
        "--data",
        str(a.data),
        "--window",
        str(a.window),
        "--stride",
        str(a.stride),
        "--batch-size",
        str(a.batch_size),
        "--dim",
        str(a.dim),
        "--layers",
        str(a.layers),
        "--heads",
        str(a.heads),
        "--ffn",
        str(a.ffn),
        "--dropout",
        str(a.dropout),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--repeats",
        str(a.repeats),
        "--seed",
        str(a.seed),
    ]
    if a.max_history is not None:
        flags += ["--max-history", str(a.max_history)]
    if a.threads:
        flags += ["--threads", str(a.threads)]
    return flags


def best_of(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Across rounds: the round with the most tokens/s (its loader share and load with it), the
    fastest window build, the highest peak RSS; every round's figures stay under "rounds"."""
    if old is None:
        return {**new, "rounds": [new]}
    rounds = [*old["rounds"], new]
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {**new, "rounds": rounds}
    best = dict(max(ok, key=lambda r: r["tokens_per_s"]))
    if "build_s" in best:
        best["build_s"] = min(r["build_s"] for r in ok)
    best["peak_rss"] = max(r["peak_rss"] for r in ok)
    return {**best, "rounds": rounds}


def machine() -> dict[str, Any]:
    cpu, cores = cpu_and_cores()
    return {"cpu": cpu, "cores": cores, "platform": platform.platform()}


def ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x and y else None


def report(res: dict[str, dict[str, Any]], a: argparse.Namespace, mach: dict[str, Any]) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=190)
    ours, peer, paper, floor = (res.get(k, {}) for k in ("longrec", "peer", "paper", "floor"))
    some = next((r for r in res.values() if "versions" in r), {})
    v = some.get("versions", {})
    con.print(
        f"machine: {mach['cpu']}, {mach['cores']} cores, torch threads {some.get('torch_threads', '?')}; "
        f"python {v.get('python', '?')}, torch {v.get('torch', '?')}, numpy {v.get('numpy', '?')}"
    )
    con.print(
        f"data {a.data}; window {a.window}, stride {a.stride}, max history {a.max_history}, batch {a.batch_size}; "
        f"model d={a.dim}, {a.layers} layers, {a.heads} heads, ffn {a.ffn}, "
        f"{some.get('parameters', 0):,} parameters; loss ce; {a.steps} timed steps after {a.warmup} warm-up; "
        f"best of {a.rounds} round(s)"
    )

    t = Table(title="training pipelines (fresh process each)", title_justify="left")
    for col in (
        "pipeline",
        "windows",
        "build s",
        "÷ ours",
        "step ms",
        "tokens/s",
        "ours ÷ this",
        "floor ÷ step",
        "loader share",
        "cpu/wall",
        "tokens/CPU-s",
        "peak RSS MiB",
        "above imports",
        "load",
    ):
        t.add_column(col, justify="left" if col == "pipeline" else "right")
    rows = []
    for name in PIPELINES:
        r = res.get(name)
        if r is None:
            continue
        if "error" in r:
            t.add_row(LABELS[name], f"[red]failed: {r['error']}[/]", *[""] * 11, f"{r['load']:.1f}")
            continue
        peak = r["peak_rss"]
        row = {
            "pipeline": name,
            "windows": r.get("windows"),
            "build_s": r.get("build_s"),
            "build_over_ours": ratio(r.get("build_s"), ours.get("build_s")),
            "step_ms": r["step_ms"],
            "tokens_per_s": r["tokens_per_s"],
            "ours_over_this": ratio(ours.get("tokens_per_s"), r["tokens_per_s"]),
            "floor_over_step": ratio(floor.get("step_ms"), r["step_ms"]),
            "loader_share": r["loader_share"],
            "cpu_over_wall": r["cpu_over_wall"],
            "tokens_per_cpu_s": r["tokens_per_cpu_s"],
            "peak_rss_bytes": peak,
            "peak_above_imports_bytes": peak - r["rss_after_imports"],
            "load": r["load"],
        }
        rows.append(row)
        f = lambda x, spec, unit="": "—" if x is None else format(x, spec) + unit
        t.add_row(
            LABELS[name],
            f(row["windows"], ","),
            f(row["build_s"], ".4g"),
            f(row["build_over_ours"], ",.0f", "×"),
            f(row["step_ms"], ".1f"),
            f(row["tokens_per_s"], ",.0f"),
            f(row["ours_over_this"], ".2f", "×"),
            f(row["floor_over_step"], ".0%"),
            f(row["loader_share"], ".1%"),
            f(row["cpu_over_wall"], ".2f"),
            f(row["tokens_per_cpu_s"], ",.0f"),
            f(peak / 2**20, ",.0f"),
            f(row["peak_above_imports_bytes"] / 2**20, ",.0f"),
            f"{r['load']:.1f}",
        )
    con.print(t)

    build_x = ratio(peer.get("build_s"), ours.get("build_s"))
    tok_x = ratio(ours.get("tokens_per_s"), peer.get("tokens_per_s"))
    cpu_x = ratio(ours.get("tokens_per_cpu_s"), peer.get("tokens_per_cpu_s"))
    mark = lambda x, target: "—" if x is None else ("met" if x >= target else "not met")
    if build_x is not None and tok_x is not None:
        con.print(
            f"vs the peer in this run: window build {build_x:,.0f}× faster (target ≥{TARGETS['build']:g}×: "
            f"{mark(build_x, TARGETS['build'])}), tokens/s {tok_x:.2f}× (target ≥{TARGETS['tokens']:g}×: "
            f"{mark(tok_x, TARGETS['tokens'])}), tokens per CPU second {cpu_x or 0:.2f}×; "
            f"peer windows identical to the core's: {'yes' if peer.get('same_windows_as_core') else '[red]NO[/]'}"
        )
    paper_x = ratio(ours.get("tokens_per_s"), paper.get("tokens_per_s"))
    if paper_x is not None:
        con.print(
            f"vs the paper-style pipeline in this run (its feeding and a plain PyTorch step): tokens/s "
            f"{paper_x:.2f}× (target ≥{TARGETS['tokens']:g}×: {mark(paper_x, TARGETS['tokens'])}), tokens per CPU "
            f"second {ratio(ours.get('tokens_per_cpu_s'), paper.get('tokens_per_cpu_s')) or 0:.2f}×"
        )
    variants_x = {}
    for name, flags in (
        ("grouped", "--group-by-length (batches of similar-length windows, less padding)"),
        ("bf16", "--precision bf16 (bf16 autocast, the loss in float32)"),
        ("grouped-bf16", "--group-by-length --precision bf16"),
    ):
        x = variants_x[name] = ratio(res.get(name, {}).get("tokens_per_s"), paper.get("tokens_per_s"))
        if x is not None:
            con.print(
                f"with {flags}: tokens/s {x:.2f}× the paper-style pipeline "
                f"(target ≥{TARGETS['tokens']:g}×: {mark(x, TARGETS['tokens'])})"
            )
    if ours.get("build_s") and ours.get("tokens_per_s"):
        con.print(
            f"for scale only (another machine, {PAPER['windows']:,} windows by its own count): the paper's released "
            f"pipeline built windows in {PAPER['build_s']} s ({PAPER['windows'] / PAPER['build_s']:,.0f} windows/s; "
            f"ours here {ours['windows'] / ours['build_s']:,.0f} windows/s, "
            f"{PAPER['build_s'] / ours['build_s']:,.0f}× less time) and trained at "
            f"{PAPER['tokens_per_s']:,.0f} tokens/s "
            f"(ours here {ours['tokens_per_s'] / PAPER['tokens_per_s']:.2f}×)"
        )
    busy = max((r["load"] for r in res.values()), default=0.0)
    if busy > 0.5 * mach["cores"]:
        con.print(
            f"[yellow]warning: 1-min load average reached {busy:.1f} on {mach['cores']} cores; other processes "
            "were competing, so these times are pessimistic and the ratios noisy: rerun on an idle machine.[/]"
        )
    con.print(
        "build s = window construction, best of --repeats; ÷ ours = that over ours; ours ÷ this = our tokens/s "
        "over this row's; floor ÷ step = the fixed-batch step time over this row's (compute is per step: padding "
        "costs as much as a token); loader share = time waiting for the next batch / timed step time; cpu/wall = "
        "CPU seconds of all threads (the gather thread's included) per wall second while timed; tokens/CPU-s = "
        "tokens per CPU second, which outside load moves far less than tokens/s (with --threads 1 no thread spins "
        "while waiting); peak RSS = VmHWM of the worker process; above imports = that minus its RSS after "
        "importing torch and opening the data dir; load = 1-min load average."
    )
    return {
        "rows": rows,
        "build_speedup_vs_peer": build_x,
        "tokens_ratio_vs_peer": tok_x,
        "tokens_per_cpu_s_ratio_vs_peer": cpu_x,
        "tokens_ratio_vs_paper_style": paper_x,
        "variant_tokens_ratio_vs_paper_style": variants_x,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data",
        default=None,
        help="data dir; default: ml-1m from ../shared/data prepared into "
        "bench/out/ml-1m, else the demo data (data/demo)",
    )
    p.add_argument("--window", type=int, default=100, help="context length T (inputs per example)")
    p.add_argument("--stride", type=int, default=1, help="distance between consecutive window ends")
    p.add_argument(
        "--max-history", type=int, default=1000, help="only a user's last H training events make windows (0 = all)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="windows per step")
    p.add_argument("--dim", type=int, default=32, help="embedding width d")
    p.add_argument("--layers", type=int, default=2, help="transformer blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument(
        "--ffn", type=int, default=2048, help="feed-forward width (the paper's code uses PyTorch's default 2048)"
    )
    p.add_argument("--dropout", type=float, default=0.2, help="dropout")
    p.add_argument("--steps", type=int, default=200, help="timed training steps per pipeline")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed ones")
    p.add_argument("--repeats", type=int, default=3, help="window builds per pipeline; the best counts")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every pipeline this many times, alternating; the best round counts (helps on a shared machine)",
    )
    p.add_argument("--seed", type=int, default=0, help="model init and shuffling seed")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of torch and the core (default: all cores)")
    p.add_argument("--only", default=None, help="comma-separated pipelines among " + ", ".join(PIPELINES))
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--worker", default=None, choices=PIPELINES, help=argparse.SUPPRESS)  # internal: one pipeline
    a = p.parse_args()
    for name in ("window", "stride", "batch_size", "dim", "layers", "heads", "ffn", "steps", "repeats", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0 or (a.threads is not None and a.threads < 1) or a.max_history < 0:
        p.error("--warmup and --max-history must be at least 0, --threads at least 1")
    if a.dim % a.heads:
        p.error(f"--heads ({a.heads}) must divide --dim ({a.dim})")
    a.max_history = a.max_history or None
    if a.worker:
        print(json.dumps(worker(a)))
        return

    names = PIPELINES if a.only is None else tuple(a.only.split(","))
    if bad := [n for n in names if n not in PIPELINES]:
        p.error(f"unknown pipeline {bad[0]!r} in --only; choose from {', '.join(PIPELINES)}")
    a.data = Path(a.data) if a.data else default_data()
    if not (a.data / "manifest.json").is_file():
        fail(f"{a.data} is not a data dir (no manifest.json); make one with scripts/prep.py")
    mach = machine()
    res: dict[str, dict[str, Any]] = {}
    for rnd in range(a.rounds):
        for name in names:  # pipelines alternate, so a burst of outside load hits each alike
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = run_fresh_worker(__file__, name, worker_flags(a), "pipeline")
            r["load"] = max(load_before, os.getloadavg()[0])  # other processes slow every figure
            say(
                f"round {rnd + 1}/{a.rounds} {name:<8} "
                + (
                    f"{r['tokens_per_s']:,.0f} tokens/s, loader share {r['loader_share']:.1%}, cpu/wall "
                    f"{r['cpu_over_wall']:.2f} (took {time.perf_counter() - t0:.0f} s, load {r['load']:.1f})"
                    if "error" not in r
                    else f"failed: {r['error']}"
                )
            )
            res[name] = best_of(res.get(name), r)
    out = report(res, a, mach)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps(
                {
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                    "machine": mach,
                    "paper": PAPER,
                    "targets": TARGETS,
                    "results": res,
                    **out,
                },
                indent=1,
            )
        )
        say(f"wrote {a.json}")


if __name__ == "__main__":
    main()
