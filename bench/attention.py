"""Seconds of one SASRec training step with the core's attention against the same attention with its
scores upcast to float32, both in the same run on the same batch.

    python bench/attention.py                       # ml-1m's 4-block model, bf16, 2 threads, ~1 min
    python bench/attention.py --layers 2 --heads 1 --precision fp32 --threads 1

Cases, each on the same model weights, batch (B x T item ids, a quarter of the rows left-padded to
half length) and AdamW step as scripts/train.py (`--loss ce`):
  core      longrec_core.kernels.CORE: the (B, H, T, T) scores made once in the activations' dtype
            (bfloat16 under --precision bf16), the mask filled in place, the softmax in that dtype
  float32   the same ops with the plain spelled-out attention: scores scaled and masked as new
            tensors, softmax in float32, weights cast back before the product with the values
The cases alternate for --rounds rounds; each prints its median step time and the ratio. Prints
figures only; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import time

import torch

from longrec_core.kernels import CORE, core_dropout
from longrec_core.losses import full_cross_entropy
from longrec_core.model import ModelConfig, SASRec

Tensor = torch.Tensor


def float32_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float, training: bool) -> Tensor:
    """The plain spelled-out attention with the core's dropout: softmax in float32 also under bf16."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1, dtype=torch.float32)
    return core_dropout(weights.to(v.dtype), p, training) @ v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=3416, help="catalogue size (ml-1m's by default)")
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="steps timed per case, alternating")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = ModelConfig(
        n_items=args.items,
        max_len=args.window,
        dim=args.dim,
        layers=args.layers,
        heads=args.heads,
        ffn=args.dim,
        dropout=args.dropout,
    )
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(1, args.items + 1, (args.batch_size, args.window), generator=g)
    targets = torch.randint(1, args.items + 1, (args.batch_size, args.window), generator=g)
    short = args.batch_size // 4
    inputs[:short, : args.window // 2] = 0
    targets[:short, : args.window // 2] = 0
    cases = {"core": CORE, "float32": dataclasses.replace(CORE, attention=float32_attention)}
    steps = {}
    for name, ops in cases.items():
        torch.manual_seed(0)
        model = SASRec(cfg, ops=ops).train()
        steps[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def step(name: str) -> float:
        model, optimizer = steps[name]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            hidden = model(inputs)
            keep = targets != 0
            loss = full_cross_entropy(hidden[keep], model.item_table(), targets[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0

    for name in cases:  # warm-up
        step(name)
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name in cases:
            seconds[name].append(step(name))
    print(
        f"SASRec step, {args.layers} blocks, {args.heads} heads, d={args.dim}, batch {args.batch_size} x "
        f"{args.window}, {args.items:,} items, {args.precision}, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    median = {name: statistics.median(s) for name, s in seconds.items()}
    for name, s in seconds.items():
        print(f"  {name:8s} median {median[name]:.3f} s  (steps: {', '.join(f'{x:.3f}' for x in s)})")
    print(f"  float32 / core: {median['float32'] / median['core']:.2f}x")


if __name__ == "__main__":
    main()
