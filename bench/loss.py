"""Peak memory and time of one forward+backward of each next-item loss, with ratios against naive.

    python bench/loss.py                                     # N = 1e5 and 1e6 items, a few minutes on 2 cores
    python bench/loss.py --items 1000000 --positions 16384   # the full-size figure (minutes on CPU)
    python bench/loss.py --device cuda --positions 16384

Cases, all on the same random inputs hidden (M, d), item table (N+1, d), targets (M,):
  naive        logits = hidden @ table.T, F.cross_entropy (padding column included, as naive code does)
  full         longrec_core.losses.full_cross_entropy (padding column left out; blocks of rows,
               gradients in the same pass)
  chunked      longrec_core.losses.chunked_cross_entropy (exact; never holds M x N logits)
  sampled-S    longrec_core.losses.sampled_softmax with S shared uniform negatives
Each measurement runs in a fresh subprocess. Peak memory is what the case adds on top of its inputs:
on CPU the process's peak RSS (VmHWM, see bench/memory.py) minus its RSS after allocating the inputs; on CUDA
torch.cuda.max_memory_allocated minus the memory allocated after the inputs. Gradients of hidden
and of the table are part of every case. CPU workers run with MALLOC_MMAP_THRESHOLD_ = 1 MiB so that
RSS follows live tensors rather than glibc's retained heap.

Where naive does not fit in --naive-budget-gb at M positions, all cases first run at the largest
power-of-two M that fits (the ratios), then the cases that fit run at full M, beside the naive
requirement computed from shapes. Prints figures only; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from memory import peak_rss_bytes, rss_bytes

from longrec_core.losses import chunked_cross_entropy, full_cross_entropy, sampled_softmax

GB = 1e9


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process: peak extra bytes and seconds of forward+backward."""
    case, n, m, d, device = spec["case"], spec["items"], spec["positions"], spec["dim"], torch.device(spec["device"])
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(m, d, device=device, generator=g).div_(4).requires_grad_(True)
    table = torch.randn(n + 1, d, device=device, generator=g).div_(4)
    table[0] = 0
    table.requires_grad_(True)
    targets = torch.randint(1, n + 1, (m,), device=device, generator=g)

    def run() -> torch.Tensor:
        if case == "naive":
            loss = F.cross_entropy(hidden @ table.T, targets)
        elif case == "full":
            loss = full_cross_entropy(hidden, table, targets)
        elif case == "chunked":
            loss = chunked_cross_entropy(hidden, table, targets, chunk_size=spec["chunk_size"])
        else:
            loss = sampled_softmax(hidden, table, targets, int(case.split("-")[1]), generator=g)
        loss.backward()
        hidden.grad = table.grad = None
        return loss.detach()

    if device.type == "cuda":
        run()  # warm-up: kernels, cuBLAS workspace
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    t0 = time.perf_counter()
    loss = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base if device.type == "cuda" else peak_rss_bytes() - base
    return {"peak_bytes": max(0.0, peak), "seconds": seconds, "loss": loss.item()}


def measure(args: argparse.Namespace, case: str, items: int, positions: int) -> dict:
    spec = {
        "case": case,
        "items": items,
        "positions": positions,
        "dim": args.dim,
        "device": args.device,
        "chunk_size": args.chunk_size,
    }
    # glibc keeps freed heap chunks below its (adaptive) mmap threshold, so RSS would carry freed
    # buffers as noise; a fixed 1 MiB threshold sends every large tensor back to the OS when freed
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail[:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def naive_bytes(items: int, positions: int) -> int:
    """What naive needs from shapes: logits, log-softmax output and the logits' gradient, float32."""
    return 3 * positions * (items + 1) * 4


def row(case: str, m: int, r: dict, ref: dict | None) -> str:
    if "error" in r:
        return f"  {case:<13}{m:>7,}  failed: {r['error']}"
    ratio = ""
    if ref is not None and "error" not in ref:
        ratio = f"{r['peak_bytes'] / ref['peak_bytes']:>9.3f}x {r['seconds'] / ref['seconds']:>8.2f}x"
    return f"  {case:<13}{m:>7,}{r['peak_bytes'] / 1e6:>11,.1f}{r['seconds']:>9.2f}{r['loss']:>9.4f}  {ratio}"


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000], help="catalogue sizes N")
    p.add_argument(
        "--positions",
        type=int,
        default=16384 if cuda else 4096,
        help="M = B x T non-padding positions (default 16384 on CUDA, 4096 on CPU to stay within minutes)",
    )
    p.add_argument("--dim", type=int, default=64, help="d")
    p.add_argument("--negatives", type=int, nargs="+", default=[256, 1024], help="sampled-softmax negatives")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="items per chunk of chunked_cross_entropy; default: its own (a 2^24-value buffer)",
    )
    p.add_argument(
        "--naive-budget-gb",
        type=float,
        default=None,
        help="memory naive may use (from shapes); default 8 on CPU, half the GPU on CUDA",
    )
    p.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cpu", "cuda"], help="where to run")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if (
        min([*args.items, args.positions, args.dim, 1 if args.chunk_size is None else args.chunk_size, *args.negatives])
        < 1
    ):
        p.error("sizes (--items, --positions, --dim, --chunk-size, --negatives) must be >= 1")
    if args.device == "cuda" and not cuda:
        p.exit(2, "error: --device cuda but no CUDA device is available\n")
    budget = (
        args.naive_budget_gb * GB
        if args.naive_budget_gb
        else (torch.cuda.get_device_properties(0).total_memory / 2 if args.device == "cuda" else 8 * GB)
    )
    cases = ["naive", "full", "chunked"] + [f"sampled-{s}" for s in args.negatives]

    print(
        f"device {args.device} ({torch.get_num_threads()} threads), d = {args.dim}, M = {args.positions:,}, "
        f"chunk {args.chunk_size or 'auto'}, naive budget {budget / GB:g} GB; "
        "peak = memory added over the inputs (MB = 1e6 bytes)"
    )
    for n in args.items:
        m_fit = args.positions
        while m_fit > 1 and naive_bytes(n, m_fit) > budget:
            m_fit //= 2
        print(
            f"\nN = {n:,} items (the table's gradient, {(n + 1) * args.dim * 4 / 1e6:,.0f} MB, is part of every peak)"
        )
        print(f"  {'case':<13}{'M':>7}{'peak MB':>11}{'time s':>9}{'loss':>9}  {'peak':>10} {'time':>9}  (vs naive)")
        naive = measure(args, "naive", n, m_fit)
        print(row("naive", m_fit, naive, naive), flush=True)
        for case in cases[1:]:
            print(row(case, m_fit, measure(args, case, n, m_fit), naive), flush=True)
        if m_fit == args.positions:
            continue
        m = args.positions
        need = naive_bytes(n, m)
        scaled = naive["peak_bytes"] * m / m_fit if "error" not in naive else float("nan")
        print(
            f"  at M = {m:,}: naive and full need {need / GB:,.2f} GB from shapes "
            f"(logits {m * (n + 1) * 4 / GB:,.2f} GB;"
            f" {scaled / GB:,.2f} GB scaled from M = {m_fit:,}) - over budget, not run"
        )
        for case in cases[2:]:
            r = measure(args, case, n, m)
            line = row(case, m, r, None)
            if "error" not in r:
                line += f"  naive needs {need / max(r['peak_bytes'], 1):,.0f}x this"
            print(line, flush=True)


if __name__ == "__main__":
    main()
